"""UsageRecord: what one attempt of a ComputeJob used and was charged, kept for the auditor.

Every finished attempt of a job (it ended, its member was lost, it was withdrawn or deleted)
becomes one UsageRecord in the tenant's namespace, written by the operator before the charge
reaches the voucher. A record holds every fact a bill needs without the job, which may be long
gone: where it ran (cluster, provider, region, GPU model), for how long (start, end,
GPU-seconds), at what price, what it metered and what was charged, to which voucher. Its name
comes from the job's uid and the attempt's number, so it is written once whatever fails.

Records are immutable: the schema refuses any change of their spec (a CEL rule), RBAC lets
tenants and platform admins only read them, and only the operator creates them. A voucher's
``status.spent`` is the sum of its records' ``amount``s.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field

from suanli.api.common import (
    ApiModel,
    Currency,
    DNSLabel,
    DNSSubdomain,
    GPUModel,
    Money,
    ObjectMeta,
    Timestamp,
)
from suanli.api.computejob import MAX_ATTEMPTS, MAX_GPUS_PER_JOB
from suanli.api.meta import AGE_COLUMN, KindInfo, PrinterColumn
from suanli.api.validation import FieldError

IMMUTABLE_RULE: Final[dict[str, Any]] = {
    "rule": "self == oldSelf",
    "message": "usage records are immutable: they are the record of what was charged",
}


class JobReference(ApiModel):
    """The ComputeJob a record is for, as it was when the attempt ended."""

    name: DNSLabel = Field(description="name is the ComputeJob's name.")
    uid: str = Field(
        min_length=1,
        max_length=64,
        description="uid is the ComputeJob's uid: which job, among all that ever had this name.",
    )


class UsageRecordSpec(ApiModel):
    """The facts of one attempt and its charge; never changed once written."""

    job: JobReference = Field(description="job is the ComputeJob the attempt ran for.")
    voucher: DNSSubdomain = Field(
        description="voucher is the VoucherQuota, in the record's namespace, that was charged."
    )
    attempt: int = Field(
        ge=1,
        le=MAX_ATTEMPTS,
        description="attempt is the attempt's number, 1 to 16, in the job's status.attempts.",
    )
    cluster: DNSLabel = Field(description="cluster is the MemberCluster the attempt ran on.")
    provider: DNSLabel | None = Field(
        None, description="provider is the organisation running that member, if recorded."
    )
    region: DNSLabel | None = Field(None, description="region is where that member is.")
    gpu_model: GPUModel = Field(description="gpuModel is the GPU model it was placed on.")
    gpus: int = Field(
        ge=1, le=MAX_GPUS_PER_JOB, description="gpus is the GPUs the job held, 1 to 256."
    )
    start_time: Timestamp = Field(
        description="startTime is when the attempt's workload was created (RFC 3339)."
    )
    end_time: Timestamp = Field(description="endTime is when the attempt ended (RFC 3339).")
    end_reason: str = Field(
        max_length=64,
        pattern=r"^[A-Za-z][A-Za-z0-9]*$",
        description="endReason says why the attempt ended: Succeeded, Failed, "
        "DeadlineExceeded, MemberLost, MemberRemoved, WithdrawnUnschedulable or Deleted.",
    )
    gpu_seconds: int = Field(
        ge=0, description="gpuSeconds is GPUs times whole seconds from startTime to endTime."
    )
    price_per_gpu_hour: Money = Field(
        alias="pricePerGPUHour",
        description="pricePerGPUHour is the member's price for gpuModel when the attempt was "
        "placed, in currency per GPU-hour.",
    )
    currency: Currency = Field(description="currency is the ISO 4217 code of the amounts.")
    metered: Money = Field(
        description="metered is gpuSeconds at pricePerGPUHour, rounded half up to the cent."
    )
    amount: Money = Field(
        description="amount is what was charged to the voucher: metered, capped at what was "
        "left of the job's hold (the platform carries any excess, shown by metered)."
    )
    program: ProgramSplit | None = Field(
        None,
        description="program splits amount between a VoucherProgram and the company, on "
        "vouchers a programme issued.",
    )


class ProgramSplit(ApiModel):
    """How a charge on a programme's voucher was split between programme and company."""

    name: DNSLabel = Field(description="name is the VoucherProgram.")
    company: str = Field(min_length=1, max_length=63, description="company is the company charged.")
    rule: DNSLabel = Field(description="rule is the subsidy rule applied.")
    program_share: Money = Field(description="programShare is what the programme pays.")
    company_share: Money = Field(
        description="companyShare is what the company owes: amount less programShare."
    )
    no_subsidy_reason: str | None = Field(
        None,
        max_length=64,
        pattern=r"^[A-Za-z][A-Za-z0-9]*$",
        description="noSubsidyReason says why the programme paid nothing: RelatedParty (the "
        "company owns the center), MemberNotQualified or HoldUsed.",
    )


class UsageRecord(ApiModel):
    """One finished attempt of a ComputeJob and what it was charged; immutable."""

    api_version: Literal["suanli.io/v1alpha1"] = Field(
        "suanli.io/v1alpha1", description="apiVersion is suanli.io/v1alpha1."
    )
    kind: Literal["UsageRecord"] = Field("UsageRecord", description="kind is UsageRecord.")
    metadata: ObjectMeta = Field(
        default_factory=ObjectMeta, description="metadata is the standard object metadata."
    )
    spec: UsageRecordSpec = Field(
        description="spec holds the attempt's facts and charge; it cannot change.",
        json_schema_extra={"x-kubernetes-validations": [IMMUTABLE_RULE]},
    )


KIND_INFO: Final = KindInfo(
    kind="UsageRecord",
    plural="usagerecords",
    scope="Namespaced",
    short_names=("usage",),
    printer_columns=(
        PrinterColumn("Job", "string", ".spec.job.name", "The ComputeJob."),
        PrinterColumn("Attempt", "integer", ".spec.attempt", "Which attempt of the job."),
        PrinterColumn("Cluster", "string", ".spec.cluster", "Member cluster it ran on."),
        PrinterColumn("Model", "string", ".spec.gpuModel", "GPU model."),
        PrinterColumn("GPU-Seconds", "integer", ".spec.gpuSeconds", "GPU time used."),
        PrinterColumn("Amount", "string", ".spec.amount", "What was charged."),
        PrinterColumn("Voucher", "string", ".spec.voucher", "Voucher charged."),
        AGE_COLUMN,
        PrinterColumn("Provider", "string", ".spec.provider", "Who runs it.", priority=1),
        PrinterColumn("Region", "string", ".spec.region", "Where it ran.", priority=1),
        PrinterColumn("Start", "date", ".spec.startTime", "When it started.", priority=1),
        PrinterColumn("End", "date", ".spec.endTime", "When it ended.", priority=1),
        PrinterColumn("Metered", "string", ".spec.metered", "Metered cost.", priority=1),
    ),
    status_subresource=False,
)


def validate_usagerecord(record: UsageRecord) -> list[FieldError]:
    """The rules of a UsageRecord that its schema cannot express."""
    spec = record.spec
    errors: list[FieldError] = []
    if spec.end_time < spec.start_time:
        errors.append(FieldError("spec.endTime", "must not be before spec.startTime"))
    if spec.amount > spec.metered:
        errors.append(FieldError("spec.amount", "must not exceed spec.metered"))
    split = spec.program
    if split is not None and split.program_share + split.company_share != spec.amount:
        errors.append(
            FieldError("spec.program", "programShare plus companyShare must equal spec.amount")
        )
    return errors
