"""``suanli status`` (and ``kubectl suanli status``): read the hub, print the report.

Only reads, with the admin's own kubeconfig: MemberClusters, ComputeJobs and VoucherQuotas in
every namespace, and the admission Lease in the operator's namespace.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from suanli.api.kinds import COMPUTEJOBS, MEMBERCLUSTERS, VOUCHERQUOTAS
from suanli.api.meta import GROUP, VERSION
from suanli.api.names import LEASE_NAME, SYSTEM_NAMESPACE
from suanli.status.report import leader_line, render


def register(subparsers: Any) -> None:
    status = subparsers.add_parser(
        "status",
        help="the federation at a glance: members, admission leader, queue, vouchers running out",
        description="Read the hub and print each member's conditions, heartbeat, telemetry and "
        "free GPUs; who holds the admission Lease; jobs by phase and the oldest queued one; "
        "and the vouchers with less than a tenth left.",
    )
    status.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig for the hub (default: $KUBECONFIG, else ~/.kube/config)",
    )
    status.add_argument("--context", default=None, help="its context for the hub")
    status.add_argument(
        "--namespace",
        default=SYSTEM_NAMESPACE,
        help=f"the operator's namespace, where its Lease is (default {SYSTEM_NAMESPACE})",
    )
    status.set_defaults(handler=_status)


def _list(custom: client.CustomObjectsApi, plural: str) -> list[dict[str, Any]]:
    listed = custom.list_cluster_custom_object(GROUP, VERSION, plural)
    items: list[dict[str, Any]] = listed.get("items", [])
    return items


def _leader(api: client.ApiClient, namespace: str, now: datetime) -> str:
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(LEASE_NAME, namespace)
    except ApiException as error:
        if error.status == 404:
            return leader_line(None, namespace, now)
        if error.status == 403:
            # suanli-platform-admin does not grant Leases; the rest of the report still helps.
            return f"unknown: you may not read Lease {namespace}/{LEASE_NAME} ({error.reason})"
        raise
    body: dict[str, Any] = api.sanitize_for_serialization(lease)
    return leader_line(body, namespace, now)


def _status(args: argparse.Namespace) -> int:
    return print_status(args.kubeconfig, args.context, args.namespace)


def print_status(
    kubeconfig: str | None, context: str | None, namespace: str, out: TextIO = sys.stdout
) -> int:
    """Print the report for the hub of ``kubeconfig`` (the admission Lease in ``namespace``)."""
    with config.new_client_from_config(config_file=kubeconfig, context=context) as api:
        custom = client.CustomObjectsApi(api)
        now = datetime.now(UTC)
        report = render(
            server=api.configuration.host,
            members=_list(custom, MEMBERCLUSTERS),
            leader=_leader(api, namespace, now),
            jobs=_list(custom, COMPUTEJOBS),
            vouchers=_list(custom, VOUCHERQUOTAS),
            now=now,
        )
    out.write(report)
    return 0
