"""The dashboard and the alerts: valid for promtool, every alert unit-tested and documented, and
every metric they read one that suanli (or the hub's API server) exports; the chart renders them,
the NetworkPolicy and the ServiceMonitor only when asked.

e2e/test_monitoring.py checks the same names against a running operator's /metrics.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import suanli.metrics  # noqa: F401  (registers the operator's metrics)
from suanli import chart_render
from suanli.devenv.toolchain import PROMTOOL
from suanli.monitoring import alerts, dashboard
from suanli.monitoring.promql import exported_names, metric_names
from tests.built_tools import built
from tests.test_chart import find, kinds, render

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "suanli"
RULES = CHART / chart_render.ALERTS_FILE
PROMTOOL_TESTS = ROOT / "tests" / "data" / "monitoring" / "alerts-test.yaml"
RUNBOOKS = ROOT / "docs" / "cluster-admins.md"


def all_expressions() -> list[str]:
    return [alert.expr for alert in alerts.ALERTS] + dashboard.expressions()


def used_names() -> set[str]:
    return {name for expr in all_expressions() for name in metric_names(expr)}


# --- which metrics the expressions read -----------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("suanli_queue_depth", {"suanli_queue_depth"}),
        (
            'sum by (name) (rate(a_total{name=~".*[.]suanli[.]io", x!="y"}[5m])) > 0',
            {"a_total"},
        ),
        (
            "histogram_quantile(0.99, sum by (le, name) (rate(h_bucket[5m]))) > 2",
            {"h_bucket"},
        ),
        ("(max(leader) or vector(0)) < 1", {"leader"}),
        ("a / (b + c) < 0.1", {"a", "b", "c"}),
        ("sum without (pod) (x) * on (member) group_left (model) y offset 5m", {"x", "y"}),
        ('count(up{job="a:b"} == bool 1)', {"up"}),
    ],
)
def test_metric_names_are_read_from_promql(expression: str, names: set[str]) -> None:
    assert metric_names(expression) == names


def test_every_metric_used_is_exported_by_the_operator_or_the_api_server() -> None:
    operator = exported_names(REGISTRY.collect())
    unknown = {
        name
        for name in used_names() - operator
        if not any(name.startswith(family) for family in alerts.API_SERVER_METRICS)
    }
    assert unknown == set()


def test_the_api_server_metrics_listed_are_the_ones_used() -> None:
    # The list is what e2e checks on a real API server; a stale entry would go unchecked.
    used = {
        family
        for family in alerts.API_SERVER_METRICS
        if any(name.startswith(family) for name in used_names())
    }
    assert used == set(alerts.API_SERVER_METRICS)


# --- the alerts -----------------------------------------------------------------------------


def promtool() -> Path:
    return built(PROMTOOL, "promtool")


def test_the_chart_carries_the_generated_rules() -> None:
    rendered = yaml.safe_load(RULES.read_text())
    assert rendered == alerts.rule_file()


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(
        [str(promtool()), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts.ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = subprocess.run(
        [str(promtool()), "test", "rules", str(PROMTOOL_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_promtool_test_that_fires_it_and_one_that_does_not() -> None:
    tests = yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]
    checks = [check for test in tests for check in test["alert_rule_test"]]
    fired = {check["alertname"] for check in checks if check["exp_alerts"]}
    quiet = {check["alertname"] for check in checks if not check["exp_alerts"]}
    names = {alert.name for alert in alerts.ALERTS}
    assert fired == names
    assert quiet == names


def _headings(markdown: str) -> set[str]:
    return {match.group(1).strip() for match in re.finditer(r"^#+ (.+)$", markdown, re.M)}


def test_every_alert_has_a_runbook_in_the_admins_guide() -> None:
    headings = _headings(RUNBOOKS.read_text())
    missing = [alert.name for alert in alerts.ALERTS if alert.name not in headings]
    assert missing == []
    for alert in alerts.ALERTS:
        assert alert.rule()["annotations"]["runbook_url"].endswith(
            "docs/cluster-admins.md#" + alert.name.lower()
        )


# --- the dashboard --------------------------------------------------------------------------


def test_the_chart_carries_the_generated_dashboard() -> None:
    assert json.loads((CHART / chart_render.DASHBOARD_FILE).read_text()) == dashboard.dashboard()


def test_dashboard_panels_have_unique_ids_and_fit_the_grid() -> None:
    panels = dashboard.dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= dashboard.WIDTH, panel["title"]


# --- the chart ------------------------------------------------------------------------------

MONITORING_KINDS = ("ConfigMap", "PrometheusRule", "NetworkPolicy", "ServiceMonitor")


def test_nothing_for_monitoring_or_network_policy_by_default() -> None:
    assert not [k for k in kinds(render()) if k.split("/")[0] in MONITORING_KINDS]


@pytest.mark.parametrize(
    ("setting", "kind"),
    [
        ("monitoring__dashboard__enabled", "ConfigMap"),
        ("monitoring__prometheusRule__enabled", "PrometheusRule"),
        ("networkPolicy__enabled", "NetworkPolicy"),
        ("metrics__serviceMonitor__enabled", "ServiceMonitor"),
    ],
)
def test_each_is_rendered_when_enabled_and_only_then(setting: str, kind: str) -> None:
    rendered = [k.split("/")[0] for k in kinds(render(**{setting: True}))]
    assert [k for k in rendered if k in MONITORING_KINDS] == [kind]
    member = kinds(render(**{setting: True, "hub__enabled": False}))
    assert not [k for k in member if k.split("/")[0] in MONITORING_KINDS]


def test_the_dashboard_configmap_is_labelled_for_grafanas_sidecar() -> None:
    docs = render(
        monitoring__dashboard__enabled=True,
        monitoring__dashboard__namespace="monitoring",
        monitoring__dashboard__annotations={"grafana_folder": "suanli"},
    )
    config_map = find(docs, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "suanli"}
    assert json.loads(config_map["data"]["suanli.json"]) == dashboard.dashboard()


def test_the_prometheus_rule_holds_the_alerts_verbatim() -> None:
    docs = render(
        monitoring__prometheusRule__enabled=True,
        monitoring__prometheusRule__labels={"release": "kube-prometheus-stack"},
    )
    rule = find(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == alerts.rule_file()


def test_the_network_policy_opens_the_webhook_and_metrics_ports_only() -> None:
    metrics_from = [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    webhook_from = [{"ipBlock": {"cidr": "10.0.0.0/24"}}]
    docs = render(
        networkPolicy__enabled=True,
        networkPolicy__metricsFrom=metrics_from,
        networkPolicy__webhookFrom=webhook_from,
    )
    policy: dict[str, Any] = find(docs, "NetworkPolicy")
    deployment = find(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = {rule["ports"][0]["port"]: rule.get("from") for rule in policy["spec"]["ingress"]}
    assert rules == {"webhook": webhook_from, "metrics": metrics_from}
    container_ports = {
        p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert set(rules) <= container_ports
