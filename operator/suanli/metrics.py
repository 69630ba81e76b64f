"""The operator's Prometheus metrics, defined once.

Served on ``--metrics-port`` by prometheus-client's own HTTP server. Names follow Prometheus
conventions: a ``suanli_`` prefix, base units (seconds), ``_total`` on counters.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

ADMISSION_DECISIONS: Final = Counter(
    "suanli_admission_decisions_total",
    "ComputeJob admission decisions, by result (admitted, refused) and refusal reason.",
    ["result", "reason"],
)
ADMISSION_SECONDS: Final = Histogram(
    "suanli_admission_duration_seconds",
    "Time to decide one ComputeJob admission inside the operator (no API write on its path).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
VOUCHER_RESERVED: Final = Gauge(
    "suanli_voucher_reserved", "Amount reserved on a voucher.", ["namespace", "voucher", "currency"]
)
VOUCHER_SPENT: Final = Gauge(
    "suanli_voucher_spent", "Amount charged to a voucher.", ["namespace", "voucher", "currency"]
)
VOUCHER_REMAINING: Final = Gauge(
    "suanli_voucher_remaining",
    "Amount left on a voucher (credit line excluded).",
    ["namespace", "voucher", "currency"],
)
LEDGER_WRITE_ERRORS: Final = Counter(
    "suanli_voucher_ledger_write_errors_total",
    "Voucher ledger commits that failed after their retries (the callers waiting on them got "
    "the error: an admission refused, a charge retried later).",
    ["namespace", "voucher"],
)
LEDGER_WRITES: Final = Counter(
    "suanli_voucher_ledger_writes_total",
    "Voucher status writes, each committing a batch of ledger changes.",
    ["namespace", "voucher"],
)
HUB_REQUESTS: Final = Counter(
    "suanli_hub_requests_total",
    "Requests the operator's own client sent to the hub's API server (Kopf's are not counted), "
    "by method and resource.",
    ["method", "resource"],
)
EVENTS_DROPPED: Final = Counter(
    "suanli_events_dropped_total",
    "Events not written because too many were still waiting to be written.",
)
EVENT_LOOP_LAG: Final = Histogram(
    "suanli_event_loop_lag_seconds",
    "How late the operator's event loop woke a task that slept a quarter second: time it was "
    "busy with other work (or waiting for a CPU or the GIL).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
GC_PAUSE: Final = Histogram(
    "suanli_gc_pause_seconds",
    "Time the Python garbage collector stopped the operator, per collection and generation.",
    ["generation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
DISPATCH_SECONDS: Final = Histogram(
    "suanli_dispatch_latency_seconds",
    "From a ComputeJob's creation to its placement being recorded (queue wait included).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0),
)
JOBS_BY_PHASE: Final = Gauge(
    "suanli_jobs", "ComputeJobs this operator follows, by phase.", ["phase"]
)
QUEUE_DEPTH: Final = Gauge("suanli_queue_depth", "ComputeJobs waiting for capacity.")
QUEUE_OLDEST_SECONDS: Final = Gauge(
    "suanli_queue_oldest_job_age_seconds",
    "How long the longest-waiting queued ComputeJob has existed (0 when none waits).",
)
MEMBER_FREE_GPUS: Final = Gauge(
    "suanli_member_free_gpus", "Free GPUs per member cluster and model.", ["member", "model"]
)
MEMBER_TOTAL_GPUS: Final = Gauge(
    "suanli_member_gpus", "GPUs per member cluster and model.", ["member", "model"]
)
MEMBER_PFLOPS: Final = Gauge(
    "suanli_member_pflops",
    "Dense FP16 PFLOPS per member cluster: total, schedulable (on nodes taking pods), free.",
    ["member", "state"],
)
FEDERATION_PFLOPS: Final = Gauge(
    "suanli_federation_pflops",
    "Dense FP16 PFLOPS of the whole federation: total, schedulable (on Ready members), free.",
    ["state"],
)
MEMBER_CONDITION: Final = Gauge(
    "suanli_member_condition",
    "A MemberCluster's conditions as the operator last wrote them: 1 True, 0 False, by member "
    "and condition (Ready, Reachable, TelemetryFresh).",
    ["member", "condition"],
)
MEMBER_TELEMETRY_AGE: Final = Gauge(
    "suanli_member_telemetry_age_seconds",
    "Age of the oldest GPU data a member's telemetry endpoints gave at the last read, per "
    "member and endpoint (absent until an endpoint first answered).",
    ["member", "endpoint"],
)
MEMBER_KUBECONFIG_RELOADS: Final = Counter(
    "suanli_member_kubeconfig_reloads_total",
    "Reconnections of a member because its kubeconfig Secret changed (a rotated credential).",
    ["member"],
)
MEMBER_KUBECONFIG_CHECK_ERRORS: Final = Counter(
    "suanli_member_kubeconfig_check_errors_total",
    "Failed reads of a member's kubeconfig Secret by the periodic check for rotations.",
    ["member"],
)
GC_CPU: Final = Counter(
    "suanli_gc_cpu_seconds_total",
    "CPU time the Python garbage collector used (of the thread it ran on).",
)
BACKGROUND_TASK_ERRORS: Final = Counter(
    "suanli_background_task_errors_total",
    "Failed iterations of the operator's background loops (the loop goes on), by task.",
    ["task"],
)
JOBS_RETIRED: Final = Counter(
    "suanli_computejobs_retired_total",
    "Finished, charged ComputeJobs deleted from the hub after --job-retention (their usage "
    "records stay).",
)
USAGE_RECORDS: Final = Counter(
    "suanli_usage_records_charged_total",
    "Usage records charged to a voucher's ledger (one per finished attempt of a job).",
)
CHARGES: Final = Counter(
    "suanli_charged_amount_total",
    "Money charged to vouchers through usage records, by currency.",
    ["currency"],
)
ADMISSION_LEADER: Final = Gauge(
    "suanli_admission_leader",
    "1 on the replica that holds the admission Lease (it admits and runs the controllers), else 0.",
)
ADMISSION_PENDING_HOLDS: Final = Gauge(
    "suanli_admission_pending_holds",
    "Holds admitted for ComputeJobs not yet seen stored (dropped at the webhook timeout).",
)
VOUCHER_WRITE_BEHIND_PENDING: Final = Gauge(
    "suanli_voucher_write_behind_pending",
    "Vouchers whose status write is waiting behind a change of their in-memory ledger.",
)
ADMISSION_HOLDS_DROPPED: Final = Counter(
    "suanli_admission_holds_dropped_total",
    "Admitted holds dropped because their ComputeJob was never stored (a failed create, or a "
    "review posted straight to the webhook).",
)

PROGRAM_COMMITTED: Final = Gauge(
    "suanli_program_committed",
    "A voucher programme's share held for running jobs plus spent.",
    ["program", "currency"],
)
PROGRAM_LEFT: Final = Gauge(
    "suanli_program_left", "A voucher programme's pool less committed.", ["program", "currency"]
)
PROGRAM_SPENT: Final = Counter(
    "suanli_program_spent",
    "What a voucher programme paid (its burn rate is the rate of this counter).",
    ["program", "currency"],
)
PROGRAM_OWED: Final = Counter(
    "suanli_program_company_owed",
    "Companies' own shares charged on a programme's vouchers (to be invoiced).",
    ["program", "currency"],
)
ORPHANS_REMOVED: Final = Counter(
    "suanli_orphans_removed_total",
    "Remote workloads, Services and tenant-data copies removed from members because no "
    "ComputeJob on the hub has their job uid, by member and kind.",
    ["member", "kind"],
)
DISPATCH_FAILURES: Final = Counter(
    "suanli_dispatch_failures_total",
    "Remote creates that failed, by member and why: refused (the member answered 4xx), "
    "tenant-data (a referenced Secret or ConfigMap missing or refused) or transient.",
    ["member", "cause"],
)
TENANT_DATA_REFUSED: Final = Counter(
    "suanli_tenant_data_refused_total",
    "Copies of tenant Secrets and ConfigMaps not written to a member because their keys "
    "would set a device-selecting variable through envFrom.",
)
QUEUE_TIMEOUTS: Final = Counter(
    "suanli_queue_timeouts_total",
    "ComputeJobs failed because they waited in the queue longer than --queue-timeout.",
)
