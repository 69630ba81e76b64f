"""Monthly statements of a voucher programme, computed from usage records alone.

Two statements per month, both pure functions of the usage records whose attempt ended in the
month (UTC) on the programme's vouchers, so regenerating one gives the same numbers to the
cent:

- per **company**: its usage by center and GPU model (GPU-seconds, amount charged), what the
  programme paid (subsidy) and what the company owes (payable);
- per **center** (member cluster): what the programme owes it, the redemption claim, with the
  usage records behind it as the proof of delivery.

Every amount is a sum of two-decimal amounts as the records store them: no rounding here.

The operator keeps the same sums as objects: :mod:`suanli.vouchers.statement_objects`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from suanli.api.common import (
    DEFAULT_CURRENCY,
    ZERO,
    format_money,
    parse_money,
    parse_timestamp,
)
from suanli.vouchers.usage import month_of


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
