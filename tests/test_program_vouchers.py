"""Which voucher a company namespace holds, and when the clock changes it: rule choice by
class and months, the period, enrolment, and the moments the issuer wakes for."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from suanli.api.voucherprogram import VoucherProgram
from suanli.handlers.program_vouchers import _kept_after_period, desired_voucher, enrolments
from suanli.vouchers.programs import choose_rule, next_change

START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2027, 1, 1, tzinfo=UTC)


def program(name: str = "city", priority: int = 0, end: datetime = END) -> VoucherProgram:
    return VoucherProgram.model_validate(
        {
            "metadata": {"name": name, "uid": f"uid-{name}"},
            "spec": {
                "period": {"start": START.isoformat(), "end": end.isoformat()},
                "pool": "1000000.00",
                "priority": priority,
                "namespaceSelector": {"matchLabels": {"city": "sh"}},
                "rules": [
                    {
                        "name": "startup",
                        "companyClass": "startup",
                        "sharePercent": 100,
                        "companyCap": "500.00",
                        "months": 12,
                    },
                    {"name": "city-30", "sharePercent": 30, "companyCap": "5000.00"},
                ],
            },
        }
    )


def namespace(
    name: str, company: str, created: datetime, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "labels": {
                "city": "sh",
                "suanli.io/company": company,
                "suanli.io/company-class": "startup",
            },
            "annotations": annotations or {},
        }
    }


def test_a_start_up_s_months_count_from_its_enrolment_or_the_programme_s_start_if_later() -> None:
    labels = {"suanli.io/company-class": "startup"}
    joined = datetime(2026, 3, 31, tzinfo=UTC)
    rule = choose_rule(program(), labels, joined, datetime(2027, 3, 30, tzinfo=UTC))
    assert rule is not None and rule.name == "startup"
    # 12 months from 31 March: 31 March of the next year (the month's own last day).
    rule = choose_rule(program(), labels, joined, datetime(2027, 3, 31, tzinfo=UTC))
    assert rule is not None and rule.name == "city-30"
    early = datetime(2025, 6, 1, tzinfo=UTC)  # before the programme opened: counts from START
    rule = choose_rule(program(), labels, early, datetime(2026, 12, 31, tzinfo=UTC))
    assert rule is not None and rule.name == "startup"


def test_the_next_change_is_the_end_of_the_start_up_months_then_the_period_s_end() -> None:
    joined = datetime(2025, 11, 30, tzinfo=UTC)
    spec = program(end=datetime(2028, 1, 1, tzinfo=UTC))
    assert next_change(spec, joined, datetime(2026, 6, 1, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    after = datetime(2027, 1, 1, tzinfo=UTC)
    assert next_change(spec, joined, after) == datetime(2028, 1, 1, tzinfo=UTC)
    assert next_change(spec, joined, datetime(2028, 1, 1, tzinfo=UTC)) is None


def test_a_company_enrols_with_its_earliest_namespace_or_the_platform_s_annotation() -> None:
    march, may = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC)
    namespaces = [
        namespace("a1", "acme", may),
        namespace("a2", "acme", march),
        namespace("b1", "bolt", may, {"suanli.io/enrolled-at": "2025-09-01T00:00:00Z"}),
        namespace("c1", "cub", may, {"suanli.io/enrolled-at": "not a time"}),
    ]
    assert enrolments(namespaces) == {
        "acme": march,
        "bolt": datetime(2025, 9, 1, tzinfo=UTC),
        "cub": may,
    }


def test_the_voucher_follows_the_clock_from_the_start_up_rule_to_the_next() -> None:
    created = datetime(2026, 2, 10, tzinfo=UTC)
    ns = namespace("a1", "acme", created)
    enrolled, spec = enrolments([ns]), program(end=datetime(2028, 1, 1, tzinfo=UTC))
    first = desired_voucher([spec], ns, enrolled, datetime(2027, 2, 9, tzinfo=UTC))
    later = desired_voucher([spec], ns, enrolled, datetime(2027, 2, 10, tzinfo=UTC))
    assert first is not None and later is not None
    assert (first["spec"]["program"]["rule"], first["spec"]["amount"]) == ("startup", "500.00")
    assert (later["spec"]["program"]["rule"], later["spec"]["amount"]) == ("city-30", "5000.00")


def test_the_highest_priority_programme_in_its_period_issues_and_an_expired_one_keeps_its_own() -> (
    None
):
    ns = namespace("a1", "acme", START)
    old = program("old-2026", priority=9, end=datetime(2026, 6, 1, tzinfo=UTC))
    new = program("new-2026", priority=1)
    now = datetime(2026, 7, 1, tzinfo=UTC)
    desired = desired_voucher([old, new], ns, enrolments([ns]), now)
    assert desired is not None and desired["metadata"]["name"] == "program-new-2026"
    assert _kept_after_period([old, new], ns, now) == {"program-old-2026"}
    assert desired_voucher([old], ns, enrolments([ns]), now) is None
    before = datetime(2026, 5, 1, tzinfo=UTC)
    desired = desired_voucher([old, new], ns, enrolments([ns]), before)
    assert desired is not None and desired["metadata"]["name"] == "program-old-2026"
