"""VoucherProgram: a city's compute-voucher scheme, run by the platform.

A programme has a period and a pool (its whole budget for the period). It pays a share of each
charge on qualifying member clusters (the "local intelligent computing centers", chosen by a
label selector), by subsidy rules chosen with the company's class; each rule caps what one
company receives across all its namespaces and may apply only for the company's first months.
The rest of each charge is the company's own share, which it may run up to a credit line and
pays later ("use first, pay later").

Nobody applies: every namespace labelled with a company (``suanli.io/company``) that the
programme's namespace selector matches gets a VoucherQuota issued by the operator, owned by the
programme, and loses it when it stops matching. A company gets no subsidy on a center it owns
(MemberCluster ``spec.ownerCompany``): the related-party rule of Beijing's programme.

VoucherProgram is cluster-scoped: it is the platform's, and spans every tenant.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field

from suanli.api.common import (
    DEFAULT_CURRENCY,
    MONEY_HELP,
    ZERO,
    ApiModel,
    Condition,
    Currency,
    DNSLabel,
    Money,
    ObjectMeta,
    Timestamp,
    conditions_field,
    format_timestamp,
)
from suanli.api.meta import AGE_COLUMN, KindInfo, PrinterColumn
from suanli.api.validation import FieldError, duplicate_errors

COMPANY_LABEL: Final = "suanli.io/company"
"""A namespace's company: its registration number (e.g. a unified social credit code)."""
COMPANY_CLASS_LABEL: Final = "suanli.io/company-class"
"""A namespace's company class (e.g. ``startup``), which subsidy rules select on."""
ENROLLED_ANNOTATION: Final = "suanli.io/enrolled-at"
"""On a company namespace, set by the platform: when the company enrolled in voucher
programmes (RFC 3339), for one that took part before its namespaces existed here. Without it,
a namespace counts from its creation; a company from its earliest namespace."""
PROGRAM_LABEL: Final = "suanli.io/program"
"""On a VoucherQuota the operator issued: the programme that issued it."""
MAX_RULES: Final = 16
MAX_PERCENT: Final = 100


LabelValue = Annotated[
    str,
    Field(max_length=63, description="A label value the object must carry under its key."),
]


class LabelSelector(ApiModel):
    """Labels an object must carry, all of them (Kubernetes' matchLabels)."""

    match_labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        description="matchLabels are labels an object must carry, all of them; empty matches every "
        "object.",
    )

    def matches(self, labels: dict[str, str] | None) -> bool:
        """Whether ``labels`` carry every label of the selector."""
        have = labels or {}
        return all(have.get(key) == value for key, value in self.match_labels.items())


class ProgramPeriod(ApiModel):
    """When the programme runs."""

    start: Timestamp = Field(description="start is when the programme opens (RFC 3339).")
    end: Timestamp = Field(
        description="end is when it closes (RFC 3339); after it no job is subsidised."
    )


class SubsidyRule(ApiModel):
    """The share of each charge the programme pays for one class of company, and its cap."""

    name: DNSLabel = Field(description="name names the rule in status and usage records.")
    company_class: DNSLabel | None = Field(
        None,
        description="companyClass is the suanli.io/company-class label value the rule applies "
        "to; unset applies to every company. The first rule that applies is used.",
    )
    share_percent: int = Field(
        ge=0,
        le=MAX_PERCENT,
        description="sharePercent is the part of each charge the programme pays, 0 to 100.",
    )
    company_cap: Money = Field(
        description="companyCap is the most the programme pays one company over the period, "
        f"across all its namespaces, {MONEY_HELP}."
    )
    months: int | None = Field(
        None,
        ge=1,
        le=120,
        description="months limits the rule to a company's first months in the programme "
        "(counted from its enrolment, the suanli.io/enrolled-at annotation or its first "
        "namespace's creation, or from the period's start if later), 1 to 120; unset has no "
        "limit. Once they pass, the next rule that applies is used.",
    )


class VoucherProgramSpec(ApiModel):
    """The programme as the platform runs it."""

    period: ProgramPeriod = Field(description="period is when the programme runs.")
    currency: Currency = Field(
        DEFAULT_CURRENCY, description="currency is the ISO 4217 code of every amount."
    )
    pool: Money = Field(
        description=f"pool is the programme's whole budget for the period, {MONEY_HELP}."
    )
    credit_line: Money = Field(
        ZERO,
        description="creditLine is how much of its own share one company may owe across all "
        f"its namespaces (use first, pay later), {MONEY_HELP}. Defaults to 0.",
    )
    priority: int = Field(
        0,
        ge=0,
        le=1000,
        description="priority orders programmes that match the same namespace: the highest "
        "issues its voucher (at most one programme subsidises a charge), 0 to 1000.",
    )
    namespace_selector: LabelSelector = Field(
        default_factory=LabelSelector,
        description="namespaceSelector chooses the company namespaces (those labelled "
        "suanli.io/company) the programme issues vouchers to; empty chooses all.",
    )
    member_selector: LabelSelector = Field(
        default_factory=LabelSelector,
        description="memberSelector chooses the MemberClusters whose charges are subsidised; "
        "empty chooses all.",
    )
    rules: list[SubsidyRule] = Field(
        min_length=1,
        max_length=MAX_RULES,
        description="rules are the subsidy rules, first match wins, 1 to 16.",
    )


class RuleTotals(ApiModel):
    """What one rule paid and holds."""

    name: DNSLabel = Field(description="name is the rule's name.")
    companies: int = Field(ge=0, description="companies is how many companies it serves.")
    committed: Money = Field(description="committed is spent plus held under the rule.")
    spent: Money = Field(description="spent is what the programme paid under the rule.")


class VoucherProgramStatus(ApiModel):
    """What the programme has committed and spent; written by the operator only."""

    observed_generation: int | None = Field(
        None, description="observedGeneration is the spec generation the status describes."
    )
    committed: Money | None = Field(
        None, description="committed is the programme's share held for running jobs plus spent."
    )
    spent: Money | None = Field(
        None, description="spent is the programme's share of finished charges."
    )
    left: Money | None = Field(None, description="left is pool less committed.")
    owed: Money | None = Field(
        None, description="owed is the companies' own shares charged so far (to be invoiced)."
    )
    companies: int | None = Field(
        None, ge=0, description="companies is how many companies hold vouchers of it."
    )
    vouchers: int | None = Field(None, ge=0, description="vouchers is how many it issued.")
    rules: list[RuleTotals] = Field(
        default_factory=list, max_length=MAX_RULES, description="rules holds per-rule totals."
    )
    conditions: list[Condition] = conditions_field(
        "conditions are Active (the programme subsidises new jobs), Exhausted (its pool is "
        "committed) and Expired (its period is over)."
    )


class VoucherProgram(ApiModel):
    """A compute-voucher programme: a pool, subsidy rules, caps, and vouchers issued to all."""

    api_version: Literal["suanli.io/v1alpha1"] = Field(
        "suanli.io/v1alpha1", description="apiVersion is suanli.io/v1alpha1."
    )
    kind: Literal["VoucherProgram"] = Field("VoucherProgram", description="kind is VoucherProgram.")
    metadata: ObjectMeta = Field(
        default_factory=ObjectMeta, description="metadata is the standard object metadata."
    )
    spec: VoucherProgramSpec = Field(description="spec is the programme as the platform runs it.")
    status: VoucherProgramStatus = Field(
        default_factory=VoucherProgramStatus,
        description="status holds the totals; written by the operator only.",
    )


KIND_INFO: Final = KindInfo(
    kind="VoucherProgram",
    plural="voucherprograms",
    scope="Cluster",
    short_names=("vp",),
    printer_columns=(
        PrinterColumn("Pool", "string", ".spec.pool", "The programme's budget."),
        PrinterColumn("Committed", "string", ".status.committed", "Held plus spent."),
        PrinterColumn("Spent", "string", ".status.spent", "Paid for finished charges."),
        PrinterColumn("Left", "string", ".status.left", "Pool less committed."),
        PrinterColumn("Companies", "integer", ".status.companies", "Companies served."),
        PrinterColumn(
            "Active",
            "string",
            '.status.conditions[?(@.type=="Active")].status',
            "Whether it subsidises new jobs.",
        ),
        AGE_COLUMN,
        PrinterColumn("Ends", "string", ".spec.period.end", "End of the period.", priority=1),
        PrinterColumn("Owed", "string", ".status.owed", "Companies' own shares.", priority=1),
    ),
)


def validate_voucherprogram(program: VoucherProgram) -> list[FieldError]:
    """The rules of a VoucherProgram that its schema cannot express."""
    spec = program.spec
    errors: list[FieldError] = []
    if spec.period.end <= spec.period.start:
        errors.append(
            FieldError(
                "spec.period.end",
                f"must be after spec.period.start ({format_timestamp(spec.period.start)})",
            )
        )
    if spec.pool <= 0:
        errors.append(FieldError("spec.pool", "must be greater than 0"))
    errors += duplicate_errors("spec.rules", [rule.name for rule in spec.rules], "rule name")
    for index, rule in enumerate(spec.rules):
        if rule.company_cap > spec.pool:
            errors.append(
                FieldError(
                    f"spec.rules[{index}].companyCap",
                    f"{rule.company_cap} is above spec.pool ({spec.pool})",
                )
            )
    return errors
