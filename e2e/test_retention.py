"""Finished ComputeJobs leave the hub after --job-retention; what they cost stays.

An operator of this module's own runs with a retention of a few seconds: a finished, charged
job is deleted once that long has passed since it finished, never before, while a job still
running stays; its UsageRecord, `kubectl suanli usage` and the voucher's spent are unchanged.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e import operator_metrics
from e2e.conftest import LEASE_ARGS
from e2e.kube import Cluster
from e2e.tenant import GROUP, VERSION, Tenant, compute_job
from suanli.api.common import parse_timestamp
from suanli.devenv.operator_process import OperatorProcess
from suanli.kits.waiting import TIMEOUTS, wait_for

RETENTION = 6  # seconds


def _records(hub: Cluster, namespace: str) -> list[dict[str, Any]]:
    listed = client.CustomObjectsApi(hub.api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "usagerecords"
    )
    items: list[dict[str, Any]] = listed["items"]
    return items


RETIRED = "suanli_computejobs_retired_total"


def _recount_lists(operator: OperatorProcess) -> float:
    """Each recount lists the usage records of each voucher's namespace: it counts the
    recounts."""
    return operator_metrics.value(
        operator, "suanli_hub_requests_total", method="GET", resource="usagerecords"
    )


def test_a_finished_job_leaves_the_hub_after_the_retention_and_its_usage_stays(
    hub: Cluster,
    members_joined: list[str],
    session_operator_paused: None,
    namespace: str,
    tmp_path: Path,
) -> None:
    operator = OperatorProcess(
        hub.info.kubeconfig,
        tmp_path / "operator",
        "--job-retention",
        str(RETENTION),
        "--recount-interval",
        "2",
        *LEASE_ARGS,
    )
    operator.start()
    tenant = Tenant(hub, namespace)
    try:
        tenant.submit(compute_job("still-running", models=["H100"], run_for="1h"))
        tenant.submit(compute_job("done", models=["H100"], run_for="1s"))
        finished = tenant.wait_phase("done", "Succeeded", timeout=TIMEOUTS.job_complete)
        uid, charge = finished["metadata"]["uid"], finished["status"]["chargedCost"]
        completed = parse_timestamp(finished["status"]["completionTime"])
        (record,) = _records(hub, namespace)
        spent = tenant.voucher_status()["spent"]

        wait_for(
            lambda: "done" not in {j["metadata"]["name"] for j in tenant.jobs()},
            timeout=RETENTION + TIMEOUTS.condition_stable,
            what="the finished job to leave the hub",
        )
        gone_at = datetime.now(UTC)
        # Not before its retention (completionTime is whole seconds, rounded down).
        assert gone_at >= completed + timedelta(seconds=RETENTION), (gone_at, completed)
        assert operator_metrics.value(operator, RETIRED) == 1.0

        # A job still running is kept, however long the retention has passed.
        assert tenant.job("still-running")["status"]["phase"] == "Running"
        # What it cost stays: the record, the voucher's spent, and the tenant's usage view.
        assert _records(hub, namespace) == [record]
        assert Decimal(record["spec"]["amount"]) == Decimal(charge)

        def folded() -> dict[str, Any] | None:
            status = tenant.voucher_status()
            entries = (status.get("ledger") or {}).get("entries", [])
            return status if uid not in {entry["uid"] for entry in entries} else None

        status = wait_for(folded, timeout=TIMEOUTS.condition_stable, what="the entry folded")
        assert status["spent"] == spent
        # Two recounts later (every 2 s), still the same: the record is not charged again.
        vouchers = client.CustomObjectsApi(hub.api).list_cluster_custom_object(
            GROUP, VERSION, "voucherquotas"
        )["items"]
        listed = _recount_lists(operator)
        wait_for(
            lambda: _recount_lists(operator) >= listed + 2 * len(vouchers),
            timeout=TIMEOUTS.job_complete,
            what="two more recounts",
        )
        assert tenant.voucher_status()["spent"] == spent
        usage = subprocess.run(
            [
                sys.executable,
                "-m",
                "suanli.plugin",
                "--kubeconfig",
                hub.info.kubeconfig,
                "-n",
                namespace,
                "usage",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert usage.returncode == 0, usage.stderr
        assert "  done: 1 attempt(s), " in usage.stdout and usage.stdout.rstrip().endswith(
            charge
        ), usage.stdout
    finally:
        with contextlib.suppress(ApiException):
            tenant.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, "computejobs", "still-running"
            )
        wait_for(lambda: not tenant.jobs(), timeout=TIMEOUTS.job_complete, what="jobs gone")
        operator.stop()
