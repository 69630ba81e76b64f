"""``suanli run``: start the operator against a hub cluster."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from suanli.options import OperatorOptions


def register(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run",
        help="run the operator (admission webhook, vouchers, dispatch) against a hub",
        description=(
            "Run the suanli operator. Outside a cluster it serves its admission webhook on "
            "https://HOST:PORT with a certificate it generates, and keeps its validating and "
            "mutating webhook configurations pointing there."
        ),
    )
    defaults = OperatorOptions()
    run.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG"),
        help="hub kubeconfig (default: $KUBECONFIG, else the in-cluster service account)",
    )
    run.add_argument("--webhook-host", default=defaults.webhook_host, help="address to serve on")
    run.add_argument("--webhook-port", type=int, default=defaults.webhook_port)
    run.add_argument(
        "--webhook-cert-dir",
        type=Path,
        help="directory with tls.crt, tls.key and ca.crt; generated there when missing "
        "(default: a private temporary directory)",
    )
    run.add_argument(
        "--managed-webhook-config",
        default=defaults.managed_webhook_config,
        help="name of the Validating- and MutatingWebhookConfiguration to keep current; '' "
        "when the Helm chart manages them",
    )
    run.add_argument(
        "--recount-interval",
        type=float,
        default=defaults.recount_interval,
        help="seconds between voucher ledger recounts (default %(default)s)",
    )
    run.add_argument(
        "--statement-interval",
        type=_positive_seconds,
        default=defaults.statement_interval,
        help="seconds between regenerations of the VoucherStatements of programme months "
        "that got usage records (default %(default)s)",
    )
    run.add_argument(
        "--hold-grace",
        type=float,
        default=defaults.hold_grace_seconds,
        help="seconds before a reservation whose job never appeared is released "
        "(default %(default)s)",
    )
    run.add_argument(
        "--member-grace",
        type=float,
        default=defaults.member_grace_seconds,
        help="seconds a member may stay unreachable before its jobs are placed elsewhere "
        "(default %(default)s)",
    )
    run.add_argument(
        "--unschedulable-timeout",
        type=float,
        default=defaults.unschedulable_seconds,
        help="seconds a placed job's pods may stay unschedulable before it is moved "
        "(default %(default)s)",
    )
    run.add_argument(
        "--max-attempts",
        type=int,
        default=defaults.max_attempts,
        help="placements per job before it fails (default %(default)s)",
    )
    run.add_argument(
        "--max-dispatch-failures",
        type=_positive_int,
        default=defaults.max_dispatch_failures,
        help="failed remote creates per job (refused by a member, a missing Secret, no "
        "answer) before it fails and its hold is released; a failed create uses no attempt "
        "(default %(default)s)",
    )
    run.add_argument(
        "--queue-timeout",
        type=_positive_seconds,
        default=defaults.queue_timeout_seconds,
        metavar="SECONDS",
        help="seconds a job may wait to be placed before it fails and its hold is released "
        "(default %(default)s)",
    )
    run.add_argument(
        "--max-termination-grace",
        type=_positive_int,
        default=defaults.termination_grace_seconds,
        metavar="SECONDS",
        help="the most seconds a job's pods get to stop: a template's "
        "terminationGracePeriodSeconds (and its probes') above it is bounded to it "
        "(default %(default)s)",
    )
    run.add_argument(
        "--orphan-sweep-interval",
        type=_positive_seconds,
        default=defaults.orphan_sweep_seconds,
        metavar="SECONDS",
        help="seconds between sweeps of every member for workloads, Services and copies "
        "whose ComputeJob the hub no longer has (default %(default)s)",
    )
    run.add_argument(
        "--allow-kubeconfig-exec",
        action="store_true",
        help="let member kubeconfigs use exec or auth-provider credential plugins, which run "
        "commands inside the operator (default: such kubeconfigs are refused)",
    )
    run.add_argument(
        "--remote-job-ttl",
        type=int,
        default=defaults.remote_job_ttl_seconds,
        help="seconds a finished Job stays on its member once the hub recorded its outcome "
        "(default %(default)s)",
    )
    run.add_argument(
        "--job-retention",
        type=_positive_seconds,
        default=defaults.job_retention_seconds,
        metavar="SECONDS",
        help="delete a finished ComputeJob this long after it finished and was charged; its "
        "usage records stay (default: keep every job, since tenants lose the job's status and "
        "`kubectl describe`: choose how long they may need them)",
    )
    run.add_argument(
        "--tenant-data-sync-interval",
        type=float,
        default=defaults.tenant_data_sync_seconds,
        help="seconds between re-reads of running jobs' Secrets and ConfigMaps, copied to "
        "their members (default %(default)s)",
    )
    run.add_argument(
        "--kubeconfig-check-interval",
        type=float,
        default=defaults.kubeconfig_check_seconds,
        help="seconds between reads of each member's kubeconfig Secret; a changed one "
        "reconnects the member (default %(default)s)",
    )
    run.add_argument(
        "--liveness",
        default=None,
        help="serve /healthz, /readyz and /admitting at this URL's address, e.g. "
        "http://0.0.0.0:8080/healthz",
    )
    run.add_argument("--metrics-port", type=int, default=None, help="Prometheus metrics port")
    run.add_argument(
        "--metrics-host", default=defaults.metrics_host, help="address for the metrics server"
    )
    run.add_argument(
        "--webhook-timeout",
        type=float,
        default=defaults.webhook_timeout,
        help="the webhook configurations' timeoutSeconds: admitted holds whose job is not "
        "stored this long are dropped, and a new leader waits this long (default %(default)s)",
    )
    run.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE") or defaults.lease_namespace,
        help="namespace of the admission Lease (default: $POD_NAMESPACE, else %(default)s)",
    )
    run.add_argument("--lease-name", default=defaults.lease_name, help="the admission Lease")
    run.add_argument(
        "--lease-duration",
        type=float,
        default=defaults.lease_duration,
        help="seconds a standby waits on a leader that stopped renewing (default %(default)s)",
    )
    run.add_argument(
        "--lease-renew-deadline",
        type=float,
        default=defaults.lease_renew_deadline,
        help="seconds the leader may fail to renew before it stops leading (default "
        "%(default)s; less than --lease-duration)",
    )
    run.add_argument(
        "--lease-retry",
        type=float,
        default=defaults.lease_retry,
        help="seconds between renewals and between a standby's tries (default %(default)s)",
    )
    run.set_defaults(handler=_run)


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return seconds


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return value


def _run(args: argparse.Namespace) -> int:
    # Imported here: loading the handlers registers them with Kopf, which only `run` wants.
    from suanli.handlers import operator  # noqa: PLC0415

    options = OperatorOptions(
        kubeconfig=args.kubeconfig,
        webhook_host=args.webhook_host,
        webhook_port=args.webhook_port,
        webhook_cert_dir=args.webhook_cert_dir,
        managed_webhook_config=args.managed_webhook_config or None,
        recount_interval=args.recount_interval,
        statement_interval=args.statement_interval,
        hold_grace_seconds=args.hold_grace,
        member_grace_seconds=args.member_grace,
        unschedulable_seconds=args.unschedulable_timeout,
        max_attempts=args.max_attempts,
        max_dispatch_failures=args.max_dispatch_failures,
        queue_timeout_seconds=args.queue_timeout,
        termination_grace_seconds=args.max_termination_grace,
        orphan_sweep_seconds=args.orphan_sweep_interval,
        allow_kubeconfig_exec=args.allow_kubeconfig_exec,
        kubeconfig_check_seconds=args.kubeconfig_check_interval,
        webhook_timeout=args.webhook_timeout,
        lease_namespace=args.lease_namespace,
        lease_name=args.lease_name,
        lease_duration=args.lease_duration,
        lease_renew_deadline=args.lease_renew_deadline,
        lease_retry=args.lease_retry,
        pod_name=os.environ.get("POD_NAME") or None,
        pod_namespace=os.environ.get("POD_NAMESPACE") or None,
        remote_job_ttl_seconds=args.remote_job_ttl,
        tenant_data_sync_seconds=args.tenant_data_sync_interval,
        job_retention_seconds=args.job_retention,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    return operator.run(options, liveness_endpoint=args.liveness)
