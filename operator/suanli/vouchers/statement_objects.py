"""A voucher programme's monthly statements as VoucherStatement objects the operator keeps.

The same sums as the CLI's statements (:func:`suanli.vouchers.statements.statements`) become one
object per company and per center (:func:`statement_objects`), each naming its records by a
label selector, their count and a digest (:func:`records_digest`) instead of listing them (a
center's month outgrows an object), with a status that says whether the month may still change
(:func:`next_status`). :class:`DirtyMonths` says which months the leader must regenerate.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from suanli.api.common import (
    Condition,
    ConditionStatus,
    format_money,
    format_timestamp,
    is_dns_label,
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
from suanli.vouchers.statements import Line, Statements, Totals
from suanli.vouchers.usage import label_value, month_of

CLOSE_GRACE: Final = timedelta(days=1)
"""How long after its month a statement stays Open: a record is written when its attempt's end
is seen, which a member unreachable for a while (or a hub down) can delay past midnight."""


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
