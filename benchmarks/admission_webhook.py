"""Admission under load: concurrent ComputeJob creates against one voucher, through the webhook.

Brings up a local federation (hub + member-a) unless one named --federation is already up,
installs suanli, starts the operator, then creates --jobs ComputeJobs from --concurrency threads
against a voucher that affords --affordable of them. Prints the admitted count and the
webhook's latency as the API server measures it (the histogram
apiserver_admission_webhook_admission_duration_seconds for our webhook, read before and after),
plus the client-side create latency. Figures are printed, never asserted.

    .venv/bin/python benchmarks/admission_webhook.py --jobs 300 --concurrency 50
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

from _common import api_metrics, quantile, webhook_buckets
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from suanli.devenv import federation, install
from suanli.devenv.operator_process import OperatorProcess
from suanli.devenv.toolchain import ensure_toolchain
from suanli.devenv.topology import default_federation

WEBHOOK = "computejob-admission.suanli.io"
PRICE = Decimal("28.00")  # install.DEFAULT_PRICES["H100"]: 1 GPU x 1h


def voucher(amount: Decimal) -> dict[str, Any]:
    return {
        "apiVersion": "suanli.io/v1alpha1",
        "kind": "VoucherQuota",
        "metadata": {"name": "bench"},
        "spec": {
            "amount": f"{amount:.2f}",
            "currency": "CNY",
            "validUntil": "2099-01-01T00:00:00Z",
        },
    }


def job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "suanli.io/v1alpha1",
        "kind": "ComputeJob",
        "metadata": {"name": name},
        "spec": {
            "maxRuntime": "1h",
            "gpuModels": ["H100"],
            "voucherRef": {"name": "bench"},
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "registry.example/bench:1"}],
                }
            },
        },
    }


def run_burst(hub: client.ApiClient, args: argparse.Namespace) -> dict[str, Any]:
    """Create the jobs concurrently in a fresh namespace; the figures of the burst."""
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(hub).create_namespace({"metadata": {"name": namespace}})
    custom = client.CustomObjectsApi(hub)
    # Affords exactly --affordable jobs (and half of one more).
    amount = PRICE * args.affordable + PRICE / 2
    custom.create_namespaced_custom_object(
        "suanli.io", "v1alpha1", namespace, "voucherquotas", voucher(amount)
    )
    time.sleep(1)  # let the operator write the voucher's first status
    before = webhook_buckets(api_metrics(hub), WEBHOOK)
    latencies: list[float] = []

    def create(index: int) -> bool:
        t0 = time.perf_counter()
        try:
            custom.create_namespaced_custom_object(
                "suanli.io", "v1alpha1", namespace, "computejobs", job(f"j-{index:05d}")
            )
            admitted = True
        except ApiException:
            admitted = False
        latencies.append(time.perf_counter() - t0)
        return admitted

    wall = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        admitted = sum(pool.map(create, range(args.jobs)))
    wall = time.perf_counter() - wall
    after = webhook_buckets(api_metrics(hub), WEBHOOK)
    delta = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
    latencies.sort()
    return {
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "affordable": args.affordable,
        "admitted": admitted,
        "webhook_calls": delta.get(math.inf, 0.0),
        "webhook_p50_ms": round(quantile(delta, 0.50) * 1000, 2),
        "webhook_p99_ms": round(quantile(delta, 0.99) * 1000, 2),
        "create_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "create_p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 2),
        "creates_per_second": round(args.jobs / wall, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--affordable", type=int, default=200)
    parser.add_argument("--federation", default="bench")
    parser.add_argument("--keep", action="store_true", help="leave the federation up")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    tools = ensure_toolchain()
    started_here = federation.load_state(args.federation) is None
    state = federation.up(default_federation(1), tools, name=args.federation, log=print)
    hub = federation.api_client(state.hub.kubeconfig)
    install.install_api(hub)
    install.join_members(hub, state.members)
    operator = OperatorProcess(state.hub.kubeconfig, Path(tempfile.mkdtemp(prefix="bench-op-")))
    operator.start()
    try:
        figures = run_burst(hub, args)
    finally:
        operator.stop()
        if started_here and not args.keep:
            federation.down(args.federation, tools, log=print)
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    print("(webhook_* from the API server's histogram, interpolated within its buckets)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if figures["admitted"] == min(args.jobs, args.affordable) else 1


if __name__ == "__main__":
    sys.exit(main())
