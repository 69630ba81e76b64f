"""The dashboard and the alerts read only metrics that really exist: the running operator's
/metrics and the hub API server's, after the webhooks were called and refused something.
`suanli status` reads the same hub as an admin would."""

from __future__ import annotations

import subprocess
import sys

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from e2e.kube import Cluster, kubectl
from e2e.operator_metrics import scrape
from e2e.tenant import Tenant, compute_job
from suanli.devenv.operator_process import OperatorProcess
from suanli.kits.waiting import TIMEOUTS, wait_for
from suanli.monitoring import alerts, dashboard
from suanli.monitoring.promql import exported_names, metric_names


@pytest.fixture
def tenant(hub: Cluster, namespace: str, operator: OperatorProcess) -> Tenant:
    return Tenant(hub, namespace)


def used_names() -> set[str]:
    expressions = [alert.expr for alert in alerts.ALERTS] + dashboard.expressions()
    return {name for expr in expressions for name in metric_names(expr)}


def test_every_metric_the_dashboard_and_alerts_read_is_exported(
    tenant: Tenant, hub: Cluster, operator: OperatorProcess
) -> None:
    # A job admitted and one refused: the API server has then called suanli's webhooks and
    # recorded a rejection, so its webhook series exist.
    tenant.submit(compute_job("fits", run_for="1s"))
    with pytest.raises(ApiException) as refused:
        tenant.submit(compute_job("no-voucher", voucher_name="missing"))
    assert refused.value.status == 403
    tenant.wait_phase("fits", "Succeeded", timeout=TIMEOUTS.job_complete)

    operator_names = exported_names(text_string_to_metric_families(scrape(operator)))
    api_server_text = kubectl(hub, "get", "--raw", "/metrics").stdout
    api_server_names = exported_names(text_string_to_metric_families(api_server_text))

    suanli_used = {name for name in used_names() if name.startswith("suanli_")}
    others = used_names() - suanli_used
    assert suanli_used - operator_names == set()
    assert others - api_server_names == set()
    assert {family for family in alerts.API_SERVER_METRICS if family in api_server_names} == set(
        alerts.API_SERVER_METRICS
    )


def test_the_operator_reports_each_member_ready(
    hub: Cluster, members_joined: list[str], operator: OperatorProcess
) -> None:
    def ready_members() -> set[str] | None:
        ready = {
            sample.labels["member"]
            for family in text_string_to_metric_families(scrape(operator))
            if family.name == "suanli_member_condition"
            for sample in family.samples
            if sample.labels["condition"] == "Ready" and sample.value == 1
        }
        return ready if ready >= set(members_joined) else None

    wait_for(ready_members, timeout=TIMEOUTS.api_ready, what="suanli_member_condition Ready=1")


def test_suanli_status_shows_the_members_and_the_admission_leader(
    hub: Cluster, members_joined: list[str], operator: OperatorProcess
) -> None:
    def report() -> list[str] | None:
        result = subprocess.run(
            [sys.executable, "-m", "suanli", "status", "--kubeconfig", hub.info.kubeconfig],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        rows = [cells for cells in map(str.split, lines) if cells and cells[0] in members_joined]
        # Ready and Reachable, once the operator has written the members' status.
        ready = len(rows) == len(members_joined)
        ready = ready and all(cells[1:3] == ["True", "True"] for cells in rows)
        return lines if ready else None

    lines = wait_for(report, timeout=TIMEOUTS.api_ready, what="suanli status to show members Ready")
    lease = client.CoordinationV1Api(hub.api).read_namespaced_lease(
        "suanli-admission", "suanli-system"
    )
    holder = lease.spec.holder_identity
    assert holder, "the session operator leads admission"
    leader = [line for line in lines if line.startswith("admission leader: ")]
    assert leader and leader[0].startswith(f"admission leader: {holder} (renewed "), lines
