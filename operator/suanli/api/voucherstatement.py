"""VoucherStatement: one party's month in a voucher programme, kept for the auditor.

For every month a programme has charges in, the operator keeps one statement per company (its
usage by center and GPU model, what the programme paid, what the company owes) and one per
center (the programme's redemption claim: what it owes the center). Each is computed from the
usage records alone (:mod:`suanli.vouchers.statements`), so regenerating it gives the same
numbers to the cent, and names the records behind it by a label selector, their count and a
digest instead of listing them: a center's month may have tens of thousands of records, more
than an object holds.

A statement is Open until its month is over and a grace period has passed (late records are
still expected), then Closed. A record that arrives for a Closed month changes the statement
openly: its ``status.revision`` goes up and the condition ``Amended`` says when and by how much.

VoucherStatement is cluster-scoped and platform-only: it spans companies and centers, and
outlives its programme (it is not owned by it).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal

from pydantic import Field

from suanli.api.common import (
    ApiModel,
    Condition,
    Currency,
    DNSLabel,
    GPUModel,
    Money,
    ObjectMeta,
    Timestamp,
    conditions_field,
    is_dns_label,
)
from suanli.api.meta import AGE_COLUMN, KindInfo, PrinterColumn
from suanli.api.validation import FieldError

MONTH_LABEL: Final = "suanli.io/month"
"""On a programme's usage records and statements: the month, YYYY-MM (UTC) of endTime."""
CENTER_LABEL: Final = "suanli.io/center"
"""On a programme's usage records and a center's statements: the MemberCluster."""
STATEMENT_FOR_LABEL: Final = "suanli.io/statement-for"
"""On statements: Company or Center."""
MONTH_PATTERN: Final = r"^[0-9]{4}-(0[1-9]|1[0-2])$"
DIGEST_PATTERN: Final = r"^sha256:[0-9a-f]{64}$"
MAX_USAGE_LINES: Final = 4096
"""Centers times GPU models one company used in a month: far above any federation."""


class StatementFor(StrEnum):
    """Whom a statement is for."""

    COMPANY = "Company"
    CENTER = "Center"


class StatementPhase(StrEnum):
    """Whether a statement's month may still change (Open) or is over (Closed)."""

    OPEN = "Open"
    CLOSED = "Closed"


AMENDED: Final = "Amended"
"""Condition type: True once a Closed statement was regenerated because records arrived late."""
LATE_RECORDS: Final = "LateRecords"
"""Reason of ``Amended``: records of the month arrived after it closed."""
NEVER_AMENDED: Final = "AsClosed"
"""Reason of ``Amended`` False: the statement is as it was when its month closed."""


class StatementTotals(ApiModel):
    """Sums over the statement's usage records, as the records store them (no rounding)."""

    gpu_seconds: int = Field(ge=0, description="gpuSeconds is the GPU time of the records.")
    amount: Money = Field(description="amount is what the records charged, subsidy plus payable.")
    subsidy: Money = Field(
        description="subsidy is the records' programShare: what the programme pays."
    )
    payable: Money = Field(
        description="payable is the records' companyShare: what the companies owe themselves."
    )
    claim: Money | None = Field(
        None,
        description="claim is, on a center's statement, what the programme owes the center "
        "(its redemption claim, equal to subsidy); unset on a company's.",
    )


class UsageLine(ApiModel):
    """A company's usage on one center and GPU model in the month."""

    center: DNSLabel = Field(description="center is the MemberCluster the jobs ran on.")
    gpu_model: GPUModel = Field(description="gpuModel is the GPU model they ran on.")
    gpu_seconds: int = Field(ge=0, description="gpuSeconds is the GPU time used there.")
    amount: Money = Field(description="amount is what it was charged.")
    subsidy: Money = Field(description="subsidy is the programme's share of amount.")
    payable: Money = Field(description="payable is the company's share of amount.")


class StatementRecords(ApiModel):
    """Which usage records the statement sums, without listing them."""

    count: int = Field(ge=0, description="count is how many records the statement sums.")
    digest: str = Field(
        pattern=DIGEST_PATTERN,
        max_length=71,
        description="digest is sha256 over the records, sorted by namespace then name, one line "
        "each: 'namespace/name amount programShare companyShare' and a newline "
        "(see docs/programmes.md for the command that checks it).",
    )
    selector: str = Field(
        max_length=1024,
        description="selector is the label selector that lists exactly these records: "
        "kubectl get usagerecords -A -l <selector>.",
    )


class VoucherStatementSpec(ApiModel):
    """The month's figures for one party; written by the operator only."""

    program: DNSLabel = Field(description="program is the VoucherProgram.")
    month: str = Field(
        pattern=MONTH_PATTERN,
        max_length=7,
        description="month is the month, YYYY-MM in UTC, of the records' endTime.",
    )
    currency: Currency = Field(description="currency is the ISO 4217 code of every amount.")
    for_: StatementFor = Field(
        alias="for", description="for says whom the statement is for: Company or Center."
    )
    party: str = Field(
        min_length=1,
        max_length=63,
        description="party is whom the statement is for: the company (its suanli.io/company "
        "label) or the center (the MemberCluster's name).",
    )
    totals: StatementTotals = Field(description="totals are the sums over the records.")
    usage: list[UsageLine] = Field(
        default_factory=list,
        max_length=MAX_USAGE_LINES,
        description="usage is, on a company's statement, its usage by center and GPU model.",
    )
    records: StatementRecords = Field(description="records names the records summed.")


class VoucherStatementStatus(ApiModel):
    """Where the statement stands; written by the operator only."""

    phase: StatementPhase | None = Field(
        None,
        description="phase is Open while the month (and a grace period after it) runs, "
        "then Closed.",
    )
    generated_at: Timestamp | None = Field(
        None, description="generatedAt is when spec was last computed from the records."
    )
    revision: int | None = Field(
        None,
        ge=1,
        description="revision counts the versions of spec: 1 when first written, one more at "
        "every change.",
    )
    closed_at: Timestamp | None = Field(
        None, description="closedAt is when the statement was first seen Closed."
    )
    conditions: list[Condition] = conditions_field(
        "conditions are Amended (True once the statement changed after it closed: records "
        "of its month arrived late)."
    )


class VoucherStatement(ApiModel):
    """One company's or center's month in a voucher programme, from the usage records."""

    api_version: Literal["suanli.io/v1alpha1"] = Field(
        "suanli.io/v1alpha1", description="apiVersion is suanli.io/v1alpha1."
    )
    kind: Literal["VoucherStatement"] = Field(
        "VoucherStatement", description="kind is VoucherStatement."
    )
    metadata: ObjectMeta = Field(
        default_factory=ObjectMeta, description="metadata is the standard object metadata."
    )
    spec: VoucherStatementSpec = Field(
        description="spec holds the month's figures; written by the operator only."
    )
    status: VoucherStatementStatus = Field(
        default_factory=VoucherStatementStatus,
        description="status says whether the month is over; written by the operator only.",
    )


KIND_INFO: Final = KindInfo(
    kind="VoucherStatement",
    plural="voucherstatements",
    scope="Cluster",
    short_names=("vst",),
    printer_columns=(
        PrinterColumn("Program", "string", ".spec.program", "The VoucherProgram."),
        PrinterColumn("Month", "string", ".spec.month", "The month (UTC)."),
        PrinterColumn("For", "string", ".spec.for", "Company or Center."),
        PrinterColumn("Party", "string", ".spec.party", "The company or the center."),
        PrinterColumn(
            "Subsidy", "string", ".spec.totals.subsidy", "Programme's share: a center's claim."
        ),
        PrinterColumn("Payable", "string", ".spec.totals.payable", "Companies' own share."),
        PrinterColumn("Records", "integer", ".spec.records.count", "Usage records summed."),
        PrinterColumn("Phase", "string", ".status.phase", "Open or Closed."),
        AGE_COLUMN,
        PrinterColumn("Amount", "string", ".spec.totals.amount", "Charged.", priority=1),
        PrinterColumn("Revision", "integer", ".status.revision", "Versions.", priority=1),
        PrinterColumn(
            "Amended",
            "string",
            f'.status.conditions[?(@.type=="{AMENDED}")].status',
            "Changed after it closed.",
            priority=1,
        ),
    ),
)


def validate_voucherstatement(statement: VoucherStatement) -> list[FieldError]:
    """The rules of a VoucherStatement that its schema cannot express."""
    spec = statement.spec
    errors: list[FieldError] = []
    if spec.for_ == StatementFor.CENTER and not is_dns_label(spec.party):
        errors.append(FieldError("spec.party", "must be a MemberCluster's name on a center's"))
    totals = spec.totals
    if totals.subsidy + totals.payable != totals.amount:
        errors.append(FieldError("spec.totals", "subsidy plus payable must equal amount"))
    if spec.for_ == StatementFor.CENTER and totals.claim != totals.subsidy:
        errors.append(FieldError("spec.totals.claim", "must equal subsidy on a center's statement"))
    return errors
