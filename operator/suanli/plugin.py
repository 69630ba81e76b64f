"""``kubectl suanli``: a tenant's questions, answered with the tenant's own credentials.

Installed with the Python package as ``kubectl-suanli`` (kubectl finds plugins by that name on
the PATH). It reads the caller's kubeconfig (``KUBECONFIG``, ``--kubeconfig``, ``--context``)
and does only what the caller's RBAC allows (the ``suanli-tenant`` role suffices):

``estimate -f FILE``
    A server-side dry-run create of the ComputeJob in FILE: admission prices it exactly as a
    real create would and answers with the estimate as a warning
    (:mod:`suanli.vouchers.estimate`), printed here. Nothing is stored or reserved. Exit status
    1 when the job would be refused.
``why JOB``
    The job's phase, its conditions (what happened, why), the failures of its pods (replica,
    node, exit code, reason, message) and its Events.
``usage``
    The namespace's vouchers (amount, spent, reserved, remaining, owed) and its usage records,
    summed per job.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, Final, TextIO

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from suanli.api.kinds import COMPUTEJOBS, USAGERECORDS, VOUCHERQUOTAS
from suanli.api.meta import GROUP, VERSION
from suanli.api.names import SYSTEM_NAMESPACE
from suanli.status.commands import print_status
from suanli.vouchers.estimate import WARNING_PREFIX

_WARNING: Final = re.compile(r'\d{3} \S+ "((?:[^"\\]|\\.)*)"')
"""One warning of an HTTP ``Warning`` header (RFC 7234: code, agent, quoted text)."""


def warnings_of(headers: Any) -> list[str]:
    """The texts of every warning in a response's headers."""
    if headers is None:
        return []
    values = headers.getlist("Warning") if hasattr(headers, "getlist") else None
    if values is None:
        value = headers.get("Warning") if hasattr(headers, "get") else None
        values = [value] if value else []
    texts: list[str] = []
    for value in values:
        texts += [match.replace('\\"', '"') for match in _WARNING.findall(value)]
    return texts


def _api(args: argparse.Namespace) -> tuple[client.ApiClient, str]:
    config.load_kube_config(config_file=args.kubeconfig, context=args.context)
    namespace = args.namespace
    if not namespace:
        _, active = config.list_kube_config_contexts(config_file=args.kubeconfig)
        if args.context:
            contexts, _ = config.list_kube_config_contexts(config_file=args.kubeconfig)
            active = next(c for c in contexts if c["name"] == args.context)
        namespace = (active.get("context") or {}).get("namespace") or "default"
    return client.ApiClient(), namespace


def _job_document(path: str) -> dict[str, Any]:
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
    for document in yaml.safe_load_all(text):
        if isinstance(document, dict) and document.get("kind") == "ComputeJob":
            return document
    raise SystemExit(f"{path}: no ComputeJob in it")


def estimate(args: argparse.Namespace, out: TextIO) -> int:
    api, namespace = _api(args)
    body = _job_document(args.filename)
    namespace = (body.get("metadata") or {}).get("namespace") or namespace
    custom = client.CustomObjectsApi(api)
    try:
        _, _, headers = custom.create_namespaced_custom_object_with_http_info(
            GROUP, VERSION, namespace, COMPUTEJOBS, body, dry_run="All"
        )
        refused = None
    except ApiException as error:
        headers = error.headers
        refused = _denial(error)
    found = [w for w in warnings_of(headers) if w.startswith(WARNING_PREFIX)]
    for warning in found:
        out.write(warning.removeprefix(WARNING_PREFIX) + "\n")
    if refused is not None:
        out.write(f"refused: {refused}\n")
        return 1
    if not found:
        out.write("admitted, but the hub gave no estimate (is suanli's webhook current?)\n")
    return 0


def _denial(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except ValueError:
        return str(error.reason)


def _conditions(status: dict[str, Any]) -> Iterable[str]:
    for condition in status.get("conditions") or []:
        yield (
            f"  {condition.get('type')}={condition.get('status')} {condition.get('reason')}: "
            f"{condition.get('message', '')}"
        )


def why(args: argparse.Namespace, out: TextIO) -> int:
    api, namespace = _api(args)
    job = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, COMPUTEJOBS, args.job
    )
    status = job.get("status") or {}
    out.write(
        f"{namespace}/{args.job}: {status.get('phase', 'Pending')}"
        + (f" on {status['cluster']}" if status.get("cluster") else "")
        + "\nConditions:\n"
    )
    out.writelines(line + "\n" for line in _conditions(status))
    failures = status.get("failures") or []
    if failures:
        out.write("Failed pods:\n")
    for failure in failures:
        out.write(
            f"  replica {failure.get('replica', '?')} pod {failure.get('pod')} on "
            f"{failure.get('cluster')}/{failure.get('node', '?')}: container "
            f"{failure.get('container', '-')} exit code {failure.get('exitCode', '-')} "
            f"reason {failure.get('reason', '-')}"
            + (" (OOMKilled)" if failure.get("oomKilled") else "")
            + (f": {failure['message']}" if failure.get("message") else "")
            + "\n"
        )
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={args.job},involvedObject.kind=ComputeJob"
    )
    if events.items:
        out.write("Events:\n")
    for event in sorted(events.items, key=lambda e: str(e.last_timestamp or e.event_time or "")):
        out.write(f"  {event.type} {event.reason}: {event.message}\n")
    return 0


def usage(args: argparse.Namespace, out: TextIO) -> int:
    api, namespace = _api(args)
    custom = client.CustomObjectsApi(api)
    vouchers = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, VOUCHERQUOTAS)
    out.write(f"Vouchers in {namespace}:\n")
    for voucher in vouchers["items"]:
        spec, status = voucher["spec"], voucher.get("status") or {}
        out.write(
            f"  {voucher['metadata']['name']}: amount {spec.get('amount')} "
            f"{spec.get('currency')}, spent {status.get('spent', '0.00')}, reserved "
            f"{status.get('reserved', '0.00')}, remaining {status.get('remaining', '-')}, "
            f"owed {status.get('owed', '0.00')}\n"
        )
    records = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, USAGERECORDS)
    per_job: dict[str, tuple[int, Decimal, int]] = {}
    for record in records["items"]:
        spec = record["spec"]
        name = spec["job"]["name"]
        seconds, amount, attempts = per_job.get(name, (0, Decimal(0), 0))
        per_job[name] = (
            seconds + spec["gpuSeconds"],
            amount + Decimal(spec["amount"]),
            attempts + 1,
        )
    out.write(f"Usage records: {len(records['items'])}\n")
    for name, (seconds, amount, attempts) in sorted(per_job.items()):
        out.write(f"  {name}: {attempts} attempt(s), {seconds} GPU-seconds, {amount:.2f}\n")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="kubectl suanli",
        description="A suanli tenant's view (cost, failures, usage) and an admin's (status).",
    )
    top.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: KUBECONFIG)")
    top.add_argument("--context", default=None, help="kubeconfig context")
    top.add_argument("-n", "--namespace", default=None, help="namespace (default: the context's)")
    sub = top.add_subparsers(dest="command", required=True)
    cost = sub.add_parser("estimate", help="what a ComputeJob would cost, before submitting it")
    cost.add_argument("-f", "--filename", required=True, help="the ComputeJob manifest (- stdin)")
    cost.set_defaults(run=estimate)
    explain = sub.add_parser("why", help="what happened to a ComputeJob, and why")
    explain.add_argument("job", help="the ComputeJob's name")
    explain.set_defaults(run=why)
    spent = sub.add_parser("usage", help="the namespace's vouchers and usage records")
    spent.set_defaults(run=usage)
    glance = sub.add_parser("status", help="the federation at a glance (for an admin)")
    glance.add_argument(
        "--operator-namespace",
        default=SYSTEM_NAMESPACE,
        help=f"where the admission Lease is (default {SYSTEM_NAMESPACE})",
    )
    glance.set_defaults(run=status)
    return top


def status(args: argparse.Namespace, out: TextIO) -> int:
    """``suanli status``, from kubectl: the same report."""
    return print_status(args.kubeconfig, args.context, args.operator_namespace, out)


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args, out)
    except ApiException as error:
        sys.stderr.write(f"error: {error.status} {_denial(error)}\n")
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
