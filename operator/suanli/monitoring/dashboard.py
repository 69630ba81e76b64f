"""The Grafana dashboard for suanli's hub, built from a list of panels.

Rendered into the chart as ``files/monitoring/dashboard.json``; the chart puts it in a ConfigMap
labelled for Grafana's dashboard sidecar when ``monitoring.dashboard.enabled``. Rows follow the
questions an admin asks, top to bottom: can tenants submit, do jobs go out, is there capacity,
where does the money go, is anything failing in the background.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from suanli.monitoring.alerts import SUANLI_WEBHOOKS

UID: Final = "suanli-hub"
TITLE: Final = "suanli: federation"
WIDTH: Final = 24  # Grafana's grid is 24 units wide
PANEL_HEIGHT: Final = 8
DATASOURCE: Final = {"type": "prometheus", "uid": "${datasource}"}


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    targets: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    width: int = 12


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


def _quantiles(metric: str, selector: str = "", by: str = "") -> tuple[tuple[str, str], ...]:
    """p50 and p99 of a histogram, per ``by`` label when given."""
    grouping = f"le, {by}" if by else "le"
    legend = f"{{{{{by}}}}} " if by else ""
    return tuple(
        (
            f"histogram_quantile({q}, sum by ({grouping}) (rate({metric}_bucket{selector}[5m])))",
            f"{legend}p{round(q * 100)}",
        )
        for q in (0.5, 0.99)
    )


_SUANLI = f"{{{SUANLI_WEBHOOKS}}}"

ADMISSION: Final = Row(
    "Admission: can tenants submit?",
    (
        Panel(
            "Admission leader",
            "1 while a replica holds the admission Lease; 0 means no job can be admitted.",
            (("max(suanli_admission_leader)", "leader"),),
            kind="stat",
            width=4,
        ),
        Panel(
            "Holds waiting for their job",
            "Admitted reservations whose ComputeJob is not stored yet.",
            (("sum(suanli_admission_pending_holds)", "holds"),),
            kind="stat",
            width=4,
        ),
        Panel(
            "Admissions and refusals by reason",
            "ComputeJob admission decisions per second.",
            (
                (
                    "sum by (result, reason) (rate(suanli_admission_decisions_total[5m]))",
                    "{{result}} {{reason}}",
                ),
            ),
            unit="ops",
            width=16,
        ),
        Panel(
            "Webhook latency (API server's view)",
            "Time the hub's API server waited for each suanli webhook.",
            _quantiles("apiserver_admission_webhook_admission_duration_seconds", _SUANLI, "name"),
            unit="s",
            width=8,
        ),
        Panel(
            "Admission decision time (operator)",
            "Time to decide one admission inside the operator, reservation included.",
            _quantiles("suanli_admission_duration_seconds"),
            unit="s",
            width=8,
        ),
        Panel(
            "Webhook call errors",
            "Calls the API server could not complete (operator down, TLS, timeout): the webhook "
            "fails closed, so each is a refused write.",
            (
                (
                    "sum by (name, error_type) (rate(apiserver_admission_webhook_rejection_count"
                    f'{{{SUANLI_WEBHOOKS}, error_type!="no_error"}}[5m]))',
                    "{{name}} {{error_type}}",
                ),
            ),
            unit="ops",
            width=8,
        ),
    ),
)

DISPATCH: Final = Row(
    "Dispatch: do jobs go out?",
    (
        Panel(
            "Jobs by phase",
            "ComputeJobs the operator follows, by phase.",
            (("sum by (phase) (suanli_jobs)", "{{phase}}"),),
            width=8,
        ),
        Panel(
            "Queue depth and oldest queued job",
            "Jobs waiting for capacity, and how long the oldest has existed.",
            (
                ("suanli_queue_depth", "queued jobs"),
                ("suanli_queue_oldest_job_age_seconds / 60", "oldest (minutes)"),
            ),
            width=8,
        ),
        Panel(
            "Dispatch latency",
            "From a job's creation to its placement (queue wait included).",
            _quantiles("suanli_dispatch_latency_seconds"),
            unit="s",
            width=8,
        ),
    ),
)

CAPACITY: Final = Row(
    "Capacity: members and their accelerators",
    (
        Panel(
            "Free and total GPUs per member",
            "Free: allocatable, not requested, not busy by telemetry. Total: every GPU.",
            (
                ("sum by (member) (suanli_member_free_gpus)", "{{member}} free"),
                ("sum by (member) (suanli_member_gpus)", "{{member}} total"),
            ),
            width=12,
        ),
        Panel(
            "PFLOPS per member (FP16, dense)",
            "Free and total dense FP16 PFLOPS per member: devices of different models, counted "
            "in one unit.",
            (
                ('sum by (member) (suanli_member_pflops{state="free"})', "{{member}} free"),
                ('sum by (member) (suanli_member_pflops{state="total"})', "{{member}} total"),
            ),
            width=12,
        ),
        Panel(
            "Free GPUs by model",
            "Free GPUs across the federation, per accelerator model.",
            (("sum by (model) (suanli_member_free_gpus)", "{{model}}"),),
            width=12,
        ),
        Panel(
            "Member conditions",
            "1 True, 0 False: Ready (gets jobs), Reachable (answers), TelemetryFresh.",
            (("suanli_member_condition", "{{member}} {{condition}}"),),
            width=12,
        ),
        Panel(
            "Telemetry age",
            "Age of the newest GPU data each member's exporters gave.",
            (("max by (member) (suanli_member_telemetry_age_seconds)", "{{member}}"),),
            unit="s",
            width=12,
        ),
    ),
)

MONEY: Final = Row(
    "Money: vouchers and burn",
    (
        Panel(
            "Burn rate",
            "Money charged to vouchers per hour, by currency.",
            (("sum by (currency) (rate(suanli_charged_amount_total[1h])) * 3600", "{{currency}}"),),
            width=8,
        ),
        Panel(
            "Programme burn and pools",
            "What each voucher programme pays per hour, and what is left of its pool.",
            (
                (
                    "sum by (program, currency) (rate(suanli_program_spent_total[1h])) * 3600",
                    "{{program}} paid per hour",
                ),
                ("suanli_program_left", "{{program}} left"),
            ),
            width=8,
        ),
        Panel(
            "Voucher remaining",
            "Amount left on each voucher (credit line excluded).",
            (("suanli_voucher_remaining", "{{namespace}}/{{voucher}}"),),
            width=8,
        ),
        Panel(
            "Voucher share used",
            "(spent + reserved) / amount, per voucher: 1 is exhausted.",
            (
                (
                    "(suanli_voucher_spent + suanli_voucher_reserved) / (suanli_voucher_remaining"
                    " + suanli_voucher_spent + suanli_voucher_reserved)",
                    "{{namespace}}/{{voucher}}",
                ),
            ),
            unit="percentunit",
            width=8,
        ),
        Panel(
            "Ledger writes and errors",
            "Voucher status writes (each a batch of ledger changes) and failed commits.",
            (
                ("sum(rate(suanli_voucher_ledger_writes_total[5m]))", "writes"),
                ("sum(rate(suanli_voucher_ledger_write_errors_total[5m]))", "errors"),
            ),
            unit="ops",
            width=12,
        ),
        Panel(
            "Vouchers with a status write waiting",
            "Vouchers whose stored status lags their ledger (write-behind).",
            (("max(suanli_voucher_write_behind_pending)", "vouchers"),),
            width=12,
        ),
    ),
)

HEALTH: Final = Row(
    "Operator health",
    (
        Panel(
            "Background task failures",
            "Failed iterations of the operator's background loops (each loop goes on).",
            (("sum by (task) (increase(suanli_background_task_errors_total[5m]))", "{{task}}"),),
            width=8,
        ),
        Panel(
            "Event loop lag",
            "How late the operator's event loop runs due work: every handler shares it.",
            _quantiles("suanli_event_loop_lag_seconds"),
            unit="s",
            width=8,
        ),
        Panel(
            "Events dropped",
            "Kubernetes Events not written because too many were waiting.",
            (("sum(rate(suanli_events_dropped_total[5m]))", "dropped"),),
            unit="ops",
            width=8,
        ),
    ),
)

ROWS: Final = (ADMISSION, DISPATCH, CAPACITY, MONEY, HEALTH)


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": PANEL_HEIGHT},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(panel.targets)
        ],
    }


def dashboard() -> dict[str, Any]:
    """The dashboard as Grafana imports it, laid out row by row."""
    panels: list[dict[str, Any]] = []
    y = 0
    for row in ROWS:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": WIDTH, "h": 1},
                "panels": [],
            }
        )
        y += 1
        x = 0
        for panel in row.panels:
            if x + panel.width > WIDTH:
                x, y = 0, y + PANEL_HEIGHT
            panels.append(_panel_json(panel, len(panels) + 1, x, y))
            x += panel.width
        y += PANEL_HEIGHT
    return {
        "uid": UID,
        "title": TITLE,
        "tags": ["suanli"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                }
            ]
        },
        "panels": panels,
    }


def expressions() -> list[str]:
    """Every PromQL expression of the dashboard."""
    return [expr for row in ROWS for panel in row.panels for expr, _ in panel.targets]


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"
