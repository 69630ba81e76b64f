"""VoucherQuota: a tenant's compute voucher, the budget and limits its ComputeJobs run under.

A voucher holds an ``amount`` in one currency for a validity window, plus an optional pay-later
``creditLine``. Admission reserves each job's worst-case cost on it and refuses jobs that would
push ``spent + reserved`` above ``amount + creditLine`` or break one of its ``limits``; a finished
job's charge moves from reserved to spent. What is spent beyond ``amount`` is ``owed``: the
"use first, pay later" part, settled outside the cluster.

All balances are money (see ``common.py``): decimals with two places, in the voucher's currency.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Final, Literal

from pydantic import Field

from suanli.api.common import (
    DEFAULT_CURRENCY,
    MONEY_HELP,
    ZERO,
    ApiModel,
    Condition,
    Currency,
    DNSLabel,
    Duration,
    GPUModel,
    Money,
    ObjectMeta,
    Timestamp,
    conditions_field,
    format_duration,
    format_timestamp,
    set_field,
)
from suanli.api.computejob import MAX_ATTEMPTS, MAX_GPUS_PER_JOB, MAX_JOB_RUNTIME
from suanli.api.meta import AGE_COLUMN, KindInfo, PrinterColumn
from suanli.api.validation import FieldError, duplicate_errors

MAX_CONCURRENT_GPUS: Final = 100_000
MAX_CONCURRENT_JOBS: Final = 5_000
# Holds of unfinished jobs plus tombstones of finished ones awaiting the recount; up to about
# 360 bytes each (uid, a long name, amounts, attempts, time), so the status stays well inside etcd's
# 1.5 MiB object limit. Admission refuses a hold that would pass it (LedgerFull), and the
# voucher's LedgerNearlyFull condition warns before.
MAX_LEDGER_ENTRIES: Final = 3_000
MAX_ALLOWED_CLUSTERS: Final = 64
MAX_ALLOWED_GPU_MODELS: Final = 32


class VoucherLimits(ApiModel):
    """Caps on how the voucher may be used; an unset limit means no cap beyond the API's own."""

    max_gpus_per_job: int | None = Field(
        None,
        alias="maxGPUsPerJob",
        ge=1,
        le=MAX_GPUS_PER_JOB,
        description="maxGPUsPerJob caps replicas x gpusPerReplica of one job, in GPUs, 1 to 256.",
    )
    max_concurrent_gpus: int | None = Field(
        None,
        alias="maxConcurrentGPUs",
        ge=1,
        le=MAX_CONCURRENT_GPUS,
        description="maxConcurrentGPUs caps the GPUs held at once by all of the voucher's "
        "admitted, unfinished jobs, in GPUs, 1 to 100000.",
    )
    max_concurrent_jobs: int | None = Field(
        None,
        ge=1,
        le=MAX_CONCURRENT_JOBS,
        description="maxConcurrentJobs caps the voucher's admitted, unfinished jobs, 1 to 5000.",
    )
    max_runtime: Duration | None = Field(
        None,
        description="maxRuntime caps each job's spec.maxRuntime, as whole hours, minutes and "
        'seconds ("8h", "1h30m"), at most 720h.',
    )


class ProgramShare(ApiModel):
    """On a voucher a VoucherProgram issued: who it was issued to, and the programme's share."""

    name: DNSLabel = Field(description="name is the VoucherProgram that issued the voucher.")
    company: str = Field(
        min_length=1,
        max_length=63,
        description="company is the company (its suanli.io/company label) the voucher is for.",
    )
    rule: DNSLabel = Field(description="rule is the subsidy rule that applies to the company.")
    share_percent: int = Field(
        ge=0, le=100, description="sharePercent is the part of each charge the programme pays."
    )


class VoucherQuotaSpec(ApiModel):
    """The voucher as issued."""

    amount: Money = Field(
        description=f"amount is the voucher's value in its currency, {MONEY_HELP}; above 0.",
    )
    currency: Currency = Field(
        DEFAULT_CURRENCY,
        description="currency is the ISO 4217 code all amounts of the voucher are in; jobs run "
        "only on members that price in it. Defaults to CNY.",
    )
    valid_from: Timestamp | None = Field(
        None,
        description="validFrom is when the voucher starts to be usable (RFC 3339, e.g. "
        '"2025-01-01T00:00:00+08:00"); unset means at once.',
    )
    valid_until: Timestamp = Field(
        description="validUntil is when the voucher stops admitting jobs (RFC 3339); jobs "
        "admitted before then run to their end and are charged.",
    )
    limits: VoucherLimits = Field(
        default_factory=VoucherLimits,
        description="limits caps GPUs per job, concurrent GPUs and jobs, and runtime.",
    )
    allowed_clusters: list[DNSLabel] = set_field(
        "allowedClusters lists the MemberClusters the voucher pays for, at most 64; empty "
        "allows every member.",
        MAX_ALLOWED_CLUSTERS,
    )
    allowed_gpu_models: list[GPUModel] = Field(
        default_factory=list,
        alias="allowedGPUModels",
        max_length=MAX_ALLOWED_GPU_MODELS,
        description="allowedGPUModels lists the GPU models the voucher pays for, at most 32; "
        "empty allows every model.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    credit_line: Money = Field(
        ZERO,
        description="creditLine is how far spending may go beyond amount, to be paid later, in "
        f"the voucher's currency, {MONEY_HELP}. Defaults to 0.",
    )

    program: ProgramShare | None = Field(
        None,
        description="program is set on vouchers a VoucherProgram issued (never by hand): "
        "each charge is then split into the programme's share and the company's own.",
    )

    @property
    def ceiling(self) -> Decimal:
        """The most that spent plus reserved may reach: amount plus the credit line."""
        return self.amount + self.credit_line


class LedgerEntryState(StrEnum):
    """Where a job's money stands on the voucher."""

    RESERVED = "Reserved"
    CHARGED = "Charged"
    RELEASED = "Released"


class LedgerEntry(ApiModel):
    """One job's hold and charges on the voucher."""

    uid: str | None = Field(
        None,
        max_length=64,
        description="uid is the ComputeJob's uid, the entry's key (a format-1 ledger keyed "
        "entries by job instead).",
    )
    job: str = Field(
        max_length=317,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$",
        description="job is the ComputeJob as namespace/name.",
    )
    state: LedgerEntryState = Field(
        description="state is Reserved (held, not yet closed), Charged or Released."
    )
    hold: Money = Field(description="hold is the worst-case amount reserved at admission.")
    gpus: int = Field(ge=0, le=MAX_GPUS_PER_JOB, description="gpus is the GPUs the job holds.")
    charged: Money | None = Field(
        None, description="charged is what the job's attempts were charged so far."
    )
    attempts: list[int] = Field(
        default_factory=list,
        max_length=MAX_ATTEMPTS,
        description="attempts lists the attempts whose usage records are in charged.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    metered: Money | None = Field(
        None,
        description="metered is the metered cost when it exceeded what was charged (the "
        "charge is capped at the hold).",
    )
    reserved_at: Timestamp | None = Field(
        None, description="reservedAt is when the hold was made (RFC 3339)."
    )


class VoucherLedger(ApiModel):
    """The voucher's per-job holds and charges: the record admission and charging write."""

    format: int = Field(
        2, ge=1, le=2, description="format is the layout version: 2 (1 keyed jobs by name)."
    )
    settled: Money = Field(
        description="settled is the sum of charges of jobs folded out of the entries (kept so "
        "that deleting a finished job never refunds it)."
    )
    entries: list[LedgerEntry] = Field(
        default_factory=list,
        max_length=MAX_LEDGER_ENTRIES,
        description=f"entries lists each job's hold or charge, sorted by uid, at most "
        f"{MAX_LEDGER_ENTRIES}.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )


class VoucherQuotaStatus(ApiModel):
    """The voucher's balances as the operator keeps them; written by the operator only."""

    observed_generation: int | None = Field(
        None,
        ge=0,
        description="observedGeneration is the metadata.generation the status reflects.",
    )
    reserved: Money | None = Field(
        None,
        description="reserved is the sum held for admitted jobs that are not yet charged, in "
        "the voucher's currency.",
    )
    spent: Money | None = Field(
        None,
        description="spent is the sum charged for finished jobs, in the voucher's currency.",
    )
    remaining: Money | None = Field(
        None,
        description="remaining is amount minus spent and reserved, never below 0, in the "
        "voucher's currency; the credit line is not included.",
    )
    owed: Money | None = Field(
        None,
        description="owed is how much of spent exceeds amount, i.e. was drawn on the credit "
        "line and is to be paid later, in the voucher's currency.",
    )
    active_jobs: int | None = Field(
        None,
        ge=0,
        description="activeJobs is the number of admitted jobs that have not finished.",
    )
    active_gpus: int | None = Field(
        None,
        alias="activeGPUs",
        ge=0,
        description="activeGPUs is the GPUs held by admitted jobs that have not finished.",
    )
    conditions: list[Condition] = conditions_field(
        "conditions are Active, Expired and Exhausted; see their reasons."
    )
    ledger: VoucherLedger | None = Field(
        None,
        description="ledger is the operator's per-job record of holds and charges, from which "
        "reserved and spent are computed; written by the operator only.",
    )


class VoucherQuota(ApiModel):
    """A compute voucher: money, a validity window and limits for one tenant namespace."""

    api_version: Literal["suanli.io/v1alpha1"] = Field(
        "suanli.io/v1alpha1", description="apiVersion is suanli.io/v1alpha1."
    )
    kind: Literal["VoucherQuota"] = Field("VoucherQuota", description="kind is VoucherQuota.")
    metadata: ObjectMeta = Field(
        default_factory=ObjectMeta, description="metadata is the standard object metadata."
    )
    spec: VoucherQuotaSpec = Field(description="spec is the voucher as issued.")
    status: VoucherQuotaStatus = Field(
        default_factory=VoucherQuotaStatus,
        description="status holds the balances; written by the operator only.",
    )


KIND_INFO: Final = KindInfo(
    kind="VoucherQuota",
    plural="voucherquotas",
    scope="Namespaced",
    short_names=("vq",),
    printer_columns=(
        PrinterColumn("Amount", "string", ".spec.amount", "Value of the voucher."),
        PrinterColumn("Spent", "string", ".status.spent", "Charged for finished jobs."),
        PrinterColumn("Reserved", "string", ".status.reserved", "Held for admitted jobs."),
        PrinterColumn("Remaining", "string", ".status.remaining", "Amount left to reserve."),
        # A string, not a date: kubectl prints future dates as "<invalid>".
        PrinterColumn("Expires", "string", ".spec.validUntil", "End of the validity window."),
        AGE_COLUMN,
        PrinterColumn("Currency", "string", ".spec.currency", "Currency.", priority=1),
        PrinterColumn("Owed", "string", ".status.owed", "Drawn on credit.", priority=1),
        PrinterColumn(
            "Active",
            "string",
            '.status.conditions[?(@.type=="Active")].status',
            "Whether new jobs may be charged.",
            priority=1,
        ),
    ),
)


def validate_voucherquota(voucher: VoucherQuota) -> list[FieldError]:
    """The rules of a VoucherQuota that its schema cannot express."""
    spec = voucher.spec
    errors: list[FieldError] = []
    if spec.amount <= 0:
        errors.append(FieldError("spec.amount", "must be greater than 0"))
    if spec.valid_from is not None and spec.valid_until <= spec.valid_from:
        errors.append(
            FieldError(
                "spec.validUntil",
                f"must be after spec.validFrom ({format_timestamp(spec.valid_from)})",
            )
        )
    limits = spec.limits
    if limits.max_runtime is not None:
        if limits.max_runtime <= timedelta(0):
            errors.append(FieldError("spec.limits.maxRuntime", "must be greater than 0s"))
        elif limits.max_runtime > MAX_JOB_RUNTIME:
            errors.append(
                FieldError(
                    "spec.limits.maxRuntime",
                    f"{format_duration(limits.max_runtime)} is above the maximum of "
                    f"{format_duration(MAX_JOB_RUNTIME)}",
                )
            )
    if (
        limits.max_gpus_per_job is not None
        and limits.max_concurrent_gpus is not None
        and limits.max_gpus_per_job > limits.max_concurrent_gpus
    ):
        errors.append(
            FieldError(
                "spec.limits.maxGPUsPerJob",
                f"{limits.max_gpus_per_job} is above spec.limits.maxConcurrentGPUs "
                f"({limits.max_concurrent_gpus}), so no job that large could ever be admitted",
            )
        )
    errors += duplicate_errors("spec.allowedClusters", spec.allowed_clusters, "cluster")
    errors += duplicate_errors("spec.allowedGPUModels", spec.allowed_gpu_models, "GPU model")
    return errors
