"""Monthly statements of a voucher programme, computed from usage records alone.

Two statements per month, both pure functions of the usage records whose attempt ended in the
month (UTC) on the programme's vouchers, so regenerating one gives the same numbers to the
cent:

- per **company**: its usage by center and GPU model (GPU-seconds, amount charged), what the
  programme paid (subsidy) and what the company owes (payable);
- per **center** (member cluster): what the programme owes it, the redemption claim, with the
  usage records behind it as the proof of delivery.

Every amount is a sum of two-decimal amounts as the records store them: no rounding here.

The same sums become the VoucherStatement objects the operator keeps
(:func:`statement_objects`): one per company and per center, each naming its records by a label
selector, their count and a digest (:func:`records_digest`) instead of listing them, with a
status that says whether the month may still change (:func:`next_status`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from suanli.api.common import (
    DEFAULT_CURRENCY,
    ZERO,
    Condition,
    ConditionStatus,
    format_money,
    format_timestamp,
    is_dns_label,
    parse_money,
    parse_timestamp,
    set_condition,
)
from suanli.api.meta import API_VERSION
from suanli.api.voucherprogram import COMPANY_LABEL, PROGRAM_LABEL
from suanli.api.voucherstatement import (
    AMENDED,
    CENTER_LABEL,
    LATE_RECORDS,
    MONTH_LABEL,
    NEVER_AMENDED,
    STATEMENT_FOR_LABEL,
    StatementFor,
    StatementPhase,
    VoucherStatementSpec,
)
from suanli.vouchers.usage import label_value, month_of

CLOSE_GRACE: Final = timedelta(days=1)
"""How long after its month a statement stays Open: a record is written when its attempt's end
is seen, which a member unreachable for a while (or a hub down) can delay past midnight."""


@dataclass(frozen=True, slots=True)
class Line:
    """One usage record's part in a statement."""

    record: str
    namespace: str
    company: str
    cluster: str
    gpu_model: str
    gpu_seconds: int
    amount: Decimal
    program_share: Decimal
    company_share: Decimal
    no_subsidy_reason: str | None
    currency: str = DEFAULT_CURRENCY

    def proof(self) -> str:
        """The record's line in :func:`records_digest`."""
        return (
            f"{self.namespace}/{self.record} {format_money(self.amount)} "
            f"{format_money(self.program_share)} {format_money(self.company_share)}\n"
        )


def lines(records: Iterable[Mapping[str, Any]], program: str, month: str) -> list[Line]:
    """The records of ``program`` whose attempt ended in ``month`` (``YYYY-MM``, UTC), by name."""
    found: list[Line] = []
    for record in records:
        spec = record.get("spec") or {}
        split = spec.get("program") or {}
        if split.get("name") != program:
            continue
        if month_of(parse_timestamp(spec["endTime"])) != month:
            continue
        found.append(
            Line(
                record=record["metadata"]["name"],
                namespace=record["metadata"].get("namespace", ""),
                company=split["company"],
                cluster=spec["cluster"],
                gpu_model=spec["gpuModel"],
                gpu_seconds=int(spec["gpuSeconds"]),
                amount=parse_money(spec["amount"]),
                program_share=parse_money(split["programShare"]),
                company_share=parse_money(split["companyShare"]),
                no_subsidy_reason=split.get("noSubsidyReason"),
                currency=spec.get("currency", DEFAULT_CURRENCY),
            )
        )
    return sorted(found, key=lambda line: (line.record, line.namespace))


@dataclass
class Totals:
    """Sums over some lines."""

    gpu_seconds: int = 0
    amount: Decimal = ZERO
    program_share: Decimal = ZERO
    company_share: Decimal = ZERO

    def add(self, line: Line) -> None:
        self.gpu_seconds += line.gpu_seconds
        self.amount += line.amount
        self.program_share += line.program_share
        self.company_share += line.company_share

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpuSeconds": self.gpu_seconds,
            "amount": format_money(self.amount),
            "subsidy": format_money(self.program_share),
            "payable": format_money(self.company_share),
        }


@dataclass
class CompanyStatement:
    """A company's month: usage by (center, model), subsidy and payable."""

    company: str
    usage: dict[tuple[str, str], Totals] = field(default_factory=dict)
    total: Totals = field(default_factory=Totals)
    lines: list[Line] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "company": self.company,
            "usage": [
                {"center": center, "gpuModel": model, **totals.to_dict()}
                for (center, model), totals in sorted(self.usage.items())
            ],
            **self.total.to_dict(),
        }


@dataclass
class CenterStatement:
    """A center's month: the programme's redemption claim and the records that prove it."""

    center: str
    total: Totals = field(default_factory=Totals)
    records: list[str] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "center": self.center,
            "claim": format_money(self.total.program_share),
            **self.total.to_dict(),
            "records": self.records,
        }


@dataclass(frozen=True)
class Statements:
    """A programme's month: one statement per company and one per center."""

    program: str
    month: str
    companies: list[CompanyStatement]
    centers: list[CenterStatement]

    @property
    def subsidy(self) -> Decimal:
        return sum((c.total.program_share for c in self.companies), ZERO)

    def to_dict(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "month": self.month,
            "subsidy": format_money(self.subsidy),
            "companies": [c.to_dict() for c in self.companies],
            "centers": [c.to_dict() for c in self.centers],
        }


def statements(records: Iterable[Mapping[str, Any]], program: str, month: str) -> Statements:
    """The month's statements of ``program`` (see the module docs)."""
    companies: dict[str, CompanyStatement] = {}
    centers: dict[str, CenterStatement] = {}
    for line in lines(records, program, month):
        company = companies.setdefault(line.company, CompanyStatement(line.company))
        company.usage.setdefault((line.cluster, line.gpu_model), Totals()).add(line)
        company.total.add(line)
        company.lines.append(line)
        center = centers.setdefault(line.cluster, CenterStatement(line.cluster))
        center.total.add(line)
        center.lines.append(line)
        center.records.append(f"{line.namespace}/{line.record}")
    return Statements(
        program,
        month,
        [companies[name] for name in sorted(companies)],
        [centers[name] for name in sorted(centers)],
    )


def to_json(result: Statements) -> str:
    return json.dumps(result.to_dict(), indent=2, sort_keys=True)


def to_csv(result: Statements, kind: str) -> str:
    """``kind`` ``company``: one row per company, center and model; ``center``: one per center."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if kind == "company":
        writer.writerow(
            ["company", "center", "gpuModel", "gpuSeconds", "amount", "subsidy", "payable"]
        )
        for company in result.companies:
            for (center, model), totals in sorted(company.usage.items()):
                row = totals.to_dict()
                writer.writerow(
                    [
                        company.company,
                        center,
                        model,
                        row["gpuSeconds"],
                        row["amount"],
                        row["subsidy"],
                        row["payable"],
                    ]
                )
    else:
        writer.writerow(["center", "claim", "gpuSeconds", "amount", "records"])
        for claim in result.centers:
            writer.writerow(
                [
                    claim.center,
                    format_money(claim.total.program_share),
                    claim.total.gpu_seconds,
                    format_money(claim.total.amount),
                    " ".join(claim.records),
                ]
            )
    return out.getvalue()


# --- statements as objects ------------------------------------------------------------------

STATEMENTS_PLURAL: Final = "voucherstatements"


def records_digest(lines: Iterable[Line]) -> str:
    """``sha256:`` over the records, sorted by namespace then name, one ``namespace/name amount
    programShare companyShare`` line each: an auditor recomputes it from the records that the
    statement's selector lists, and any record added, removed or changed changes it."""
    digest = hashlib.sha256()
    for line in sorted(lines, key=lambda line: (line.namespace, line.record)):
        digest.update(line.proof().encode())
    return f"sha256:{digest.hexdigest()}"


def month_selector(program: str, month: str) -> str:
    """The label selector of a programme's usage records (and statements) of one month."""
    return f"{PROGRAM_LABEL}={program},{MONTH_LABEL}={month}"


def party_labels(for_: StatementFor, party: str) -> dict[str, str]:
    """The label that names a statement's party, on it and on its records."""
    if for_ == StatementFor.COMPANY:
        return {COMPANY_LABEL: label_value(party)}
    return {CENTER_LABEL: party}


def statement_name(program: str, month: str, for_: StatementFor, party: str) -> str:
    """``<program>-<month>-<company|center>-<party>``: a DNS subdomain, the same every time.
    A party that is no DNS label (an upper-case registration number) is written in lower case
    with a hash of the original, so that two companies never share a name."""
    if not is_dns_label(party):
        safe = re.sub(r"[^a-z0-9-]", "-", party.lower())[:40].strip("-")
        digest = hashlib.sha256(party.encode()).hexdigest()[:10]
        party = f"{safe}-{digest}" if safe else digest
    return f"{program}-{month}-{for_.value.lower()}-{party}"


def _statement(
    result: Statements, for_: StatementFor, party: str, totals: Totals, lines: list[Line]
) -> dict[str, Any]:
    program, month = result.program, result.month
    labels = party_labels(for_, party)
    spec: dict[str, Any] = {
        "program": program,
        "month": month,
        "currency": lines[0].currency,
        "for": for_.value,
        "party": party,
        "totals": totals.to_dict(),
        "records": {
            "count": len(lines),
            "digest": records_digest(lines),
            "selector": ",".join(
                [month_selector(program, month), *(f"{k}={v}" for k, v in labels.items())]
            ),
        },
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "VoucherStatement",
        "metadata": {
            "name": statement_name(program, month, for_, party),
            "labels": {
                PROGRAM_LABEL: program,
                MONTH_LABEL: month,
                STATEMENT_FOR_LABEL: for_.value,
                **labels,
                "app.kubernetes.io/managed-by": "suanli",
            },
        },
        "spec": spec,
    }


def statement_objects(result: Statements) -> list[dict[str, Any]]:
    """The month's VoucherStatements (without status): one per company, one per center, from
    the same sums as the CLI's statements."""
    bodies: list[dict[str, Any]] = []
    for company in result.companies:
        body = _statement(
            result, StatementFor.COMPANY, company.company, company.total, company.lines
        )
        body["spec"]["usage"] = company.to_dict()["usage"]
        bodies.append(body)
    for center in result.centers:
        body = _statement(result, StatementFor.CENTER, center.center, center.total, center.lines)
        body["spec"]["totals"]["claim"] = format_money(center.total.program_share)
        bodies.append(body)
    return bodies


def closes_at(month: str) -> datetime:
    """When a month's statements close: the month's end (UTC) plus :data:`CLOSE_GRACE`."""
    year, number = (int(part) for part in month.split("-"))
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)
    return end + CLOSE_GRACE


def same_spec(stored: Mapping[str, Any] | None, spec: Mapping[str, Any]) -> bool:
    """Whether a stored statement's spec says what ``spec`` says (read through the model, so
    that the API server's way of storing it does not count as a change)."""
    if not stored:
        return False
    return (
        VoucherStatementSpec.model_validate(stored).to_dict()
        == VoucherStatementSpec.model_validate(spec).to_dict()
    )


def next_status(
    stored: Mapping[str, Any] | None, spec: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    """The status a statement should carry once ``spec`` is written over ``stored`` (the
    statement as it is, None when there is none).

    Open until :func:`closes_at`, then Closed. Every change of spec counts a revision; a change
    after the statement was Closed (records of the month arrived late) is said so, by the
    condition Amended with the figures before and after, never made silently.
    """
    before: Mapping[str, Any] = (stored or {}).get("status") or {}
    old_spec: Mapping[str, Any] = (stored or {}).get("spec") or {}
    changed = not same_spec(old_spec, spec)
    closed = now >= closes_at(str(spec["month"]))
    revision = int(before.get("revision") or 0) + (1 if changed else 0)
    conditions = [Condition.model_validate(c) for c in before.get("conditions") or []]
    if changed and stored is not None and before.get("phase") == StatementPhase.CLOSED:
        set_condition(
            conditions,
            AMENDED,
            ConditionStatus.TRUE,
            LATE_RECORDS,
            f"revision {revision}: records of {spec['month']} arrived after it closed; "
            f"{_summary(old_spec)} became {_summary(spec)}",
            now=now,
        )
    elif closed and not any(c.type == AMENDED for c in conditions):
        set_condition(
            conditions,
            AMENDED,
            ConditionStatus.FALSE,
            NEVER_AMENDED,
            "as it was when its month closed",
            now=now,
        )
    status: dict[str, Any] = {
        "phase": (StatementPhase.CLOSED if closed else StatementPhase.OPEN).value,
        "generatedAt": format_timestamp(now) if changed else before.get("generatedAt"),
        "revision": revision,
        "closedAt": before.get("closedAt") or (format_timestamp(now) if closed else None),
        "conditions": [condition.to_dict() for condition in conditions],
    }
    return {key: value for key, value in status.items() if value is not None}


def _summary(spec: Mapping[str, Any]) -> str:
    if not spec:
        return "nothing"
    totals, records = spec["totals"], spec["records"]
    return (
        f"{records['count']} records, subsidy {totals['subsidy']}, payable {totals['payable']} "
        f"{spec['currency']}"
    )


@dataclass
class DirtyMonths:
    """The (programme, month) pairs whose statements need regenerating: marked when a
    programme's usage record is booked, taken by the statements task."""

    pairs: set[tuple[str, str]] = field(default_factory=set)

    def mark(self, program: str, month: str) -> None:
        self.pairs.add((program, month))

    def mark_record(self, record: Mapping[str, Any]) -> None:
        """Mark the month of a usage record with a programme split; others are no statement's."""
        spec = record.get("spec") or {}
        split = spec.get("program") or {}
        if split.get("name") and spec.get("endTime"):
            self.mark(str(split["name"]), month_of(parse_timestamp(spec["endTime"])))

    def take(self) -> set[tuple[str, str]]:
        taken, self.pairs = self.pairs, set()
        return taken
