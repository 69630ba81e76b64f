"""The alert rules an on-call admin is woken by, each with its runbook.

Rendered into the chart as a Prometheus rule file (``files/monitoring/alerts.yaml``), which the
chart wraps in a PrometheusRule when ``monitoring.prometheusRule.enabled``. Each alert's
``runbook_url`` points at its section of docs/cluster-admins.md (what it means, what to check,
what to do); tests/test_monitoring.py checks that every alert has one, and promtool unit tests
(tests/data/monitoring/alerts-test.yaml) fire and clear every alert.

Webhook failures are read from the hub's API server (``apiserver_admission_webhook_*``): when
the operator is down, or the API server cannot reach it, the operator cannot count what never
arrived, and the webhook fails closed, so that is the moment tenants cannot submit jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

RUNBOOK_BASE: Final = (
    "https://github.com/suanli/suanli/blob/main/docs/cluster-admins.md#"  # the docs' home
)
GROUP_NAME: Final = "suanli"

# suanli's webhooks as the API server names them (computejob-admission.suanli.io, ...). A
# character class rather than an escaped dot keeps the expression free of backslashes, which
# YAML and PromQL would each want escaped again.
SUANLI_WEBHOOKS: Final = 'name=~".*[.]suanli[.]io"'

# The hub API server's metrics the alerts and the dashboard read (families; a histogram's
# _bucket series belong to it): e2e/test_monitoring.py finds each on a real API server.
API_SERVER_METRICS: Final = (
    "apiserver_admission_webhook_rejection_count",
    "apiserver_admission_webhook_admission_duration_seconds",
)

# Bounds, in one place: the runbooks quote them.
WEBHOOK_P99_SECONDS: Final = 2
QUEUED_BOUND_SECONDS: Final = 3600
TELEMETRY_MAX_AGE_SECONDS: Final = 300
VOUCHER_LOW_FRACTION: Final = 0.1
BACKGROUND_ERRORS_PER_15M: Final = 5


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    duration: str  # `for:` (0s: fire on the first evaluation that matches)
    severity: str  # critical: tenants are affected now; warning: they will be
    summary: str  # may use {{ $labels.x }} and {{ $value }}
    description: str

    @property
    def anchor(self) -> str:
        """The runbook's heading id in docs/cluster-admins.md (GitHub's slug of the name)."""
        return self.name.lower()

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.duration,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": RUNBOOK_BASE + self.anchor,
            },
        }


ALERTS: Final = (
    Alert(
        name="SuanliWebhookErrors",
        expr=(
            f"sum by (name) (rate(apiserver_admission_webhook_rejection_count{{{SUANLI_WEBHOOKS}, "
            'error_type!="no_error"}[5m])) > 0'
        ),
        duration="5m",
        severity="critical",
        summary="The API server cannot get an answer from suanli's webhook {{ $labels.name }}",
        description=(
            "Calls to {{ $labels.name }} fail ({{ $value | humanize }}/s): the webhook fails "
            "closed, so ComputeJobs, VoucherQuotas or MemberClusters cannot be created or changed."
        ),
    ),
    Alert(
        name="SuanliWebhookSlow",
        expr=(
            "histogram_quantile(0.99, sum by (le, name) (rate("
            f"apiserver_admission_webhook_admission_duration_seconds_bucket{{{SUANLI_WEBHOOKS}}}"
            f"[5m]))) > {WEBHOOK_P99_SECONDS}"
        ),
        duration="10m",
        severity="warning",
        summary="suanli's webhook {{ $labels.name }} answers slowly",
        description=(
            "99% of calls to {{ $labels.name }} took up to {{ $value | humanize }}s; above "
            f"{WEBHOOK_P99_SECONDS}s for 10 minutes. At the webhook's timeout, creates fail."
        ),
    ),
    Alert(
        name="SuanliNoAdmissionLeader",
        expr="(max(suanli_admission_leader) or vector(0)) < 1",
        duration="2m",
        severity="critical",
        summary="No suanli operator holds the admission Lease",
        description=(
            "No replica reports suanli_admission_leader=1 (or none is scraped): new "
            "ComputeJobs cannot be admitted."
        ),
    ),
    Alert(
        name="SuanliMemberNotReady",
        expr='suanli_member_condition{condition="Ready"} == 0',
        duration="5m",
        severity="warning",
        summary="Member cluster {{ $labels.member }} is not Ready",
        description=(
            "{{ $labels.member }} gets no new jobs; its running jobs move elsewhere after the "
            "operator's --member-grace."
        ),
    ),
    Alert(
        name="SuanliMemberTelemetryStale",
        expr=f"suanli_member_telemetry_age_seconds > {TELEMETRY_MAX_AGE_SECONDS}",
        duration="5m",
        severity="warning",
        summary="GPU telemetry of {{ $labels.member }} is stale",
        description=(
            "The newest GPU data from {{ $labels.endpoint }} is {{ $value | humanize }}s old: "
            "the member's free GPUs are judged by Kubernetes' view alone (busy GPUs look free)."
        ),
    ),
    Alert(
        name="SuanliVoucherNearExhaustion",
        expr=(
            "suanli_voucher_remaining / (suanli_voucher_remaining + suanli_voucher_spent + "
            f"suanli_voucher_reserved) < {VOUCHER_LOW_FRACTION}"
        ),
        duration="15m",
        severity="warning",
        summary="Voucher {{ $labels.namespace }}/{{ $labels.voucher }} is nearly used up",
        description=(
            "Only {{ $value | humanizePercentage }} of the voucher is left: new jobs "
            "that cost more are refused."
        ),
    ),
    Alert(
        name="SuanliProgramNearExhaustion",
        expr=(
            "suanli_program_left / (suanli_program_left + suanli_program_committed) "
            f"< {VOUCHER_LOW_FRACTION}"
        ),
        duration="15m",
        severity="warning",
        summary="Voucher programme {{ $labels.program }} has little of its pool left",
        description=(
            "Only {{ $value | humanizePercentage }} of the programme's pool is left: jobs "
            "whose subsidised share costs more are refused, in every company it serves."
        ),
    ),
    Alert(
        name="SuanliLedgerWriteFailures",
        expr=(
            "sum by (namespace, voucher) "
            "(increase(suanli_voucher_ledger_write_errors_total[10m])) > 0"
        ),
        duration="0s",
        severity="critical",
        summary="Ledger writes of voucher {{ $labels.namespace }}/{{ $labels.voucher }} fail",
        description=(
            "{{ $value | humanize }} ledger commits failed in 10 minutes: admissions against "
            "the voucher are refused and charges wait to be retried."
        ),
    ),
    Alert(
        name="SuanliLedgerWritesBehind",
        expr="max(suanli_voucher_write_behind_pending) > 0",
        duration="10m",
        severity="warning",
        summary="Voucher status writes have been waiting for 10 minutes",
        description=(
            "{{ $value | humanize }} vouchers' stored status lags their ledger: the ledger in "
            "memory is right, but tenants see old numbers and a restart must recount."
        ),
    ),
    Alert(
        name="SuanliBackgroundTaskFailures",
        expr=(
            "sum by (task) (increase(suanli_background_task_errors_total[15m])) > "
            f"{BACKGROUND_ERRORS_PER_15M}"
        ),
        duration="0s",
        severity="warning",
        summary="suanli's background task {{ $labels.task }} keeps failing",
        description=(
            "{{ $value | humanize }} failed iterations in 15 minutes; the loop goes on, but "
            "what it does (recounts, charges, dispatch) is not being done."
        ),
    ),
    Alert(
        name="SuanliJobsStuckQueued",
        expr=f"suanli_queue_oldest_job_age_seconds > {QUEUED_BOUND_SECONDS}",
        duration="5m",
        severity="warning",
        summary="A ComputeJob has waited over an hour for capacity",
        description=(
            "The oldest queued job has existed for {{ $value | humanizeDuration }} "
            f"(bound {QUEUED_BOUND_SECONDS}s)."
        ),
    ),
)


def rule_file() -> dict[str, Any]:
    """The rule file Prometheus and promtool read (and a PrometheusRule's spec)."""
    return {
        "groups": [{"name": GROUP_NAME, "interval": "30s", "rules": [a.rule() for a in ALERTS]}]
    }
