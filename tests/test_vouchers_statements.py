"""Statements from usage records: reproducible, and adding up to the records to the cent."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from suanli.api.common import is_dns_subdomain
from suanli.api.kinds import kind_named
from suanli.api.voucherstatement import StatementFor
from suanli.vouchers.statement_objects import (
    CLOSE_GRACE,
    DirtyMonths,
    next_status,
    statement_name,
    statement_objects,
)
from suanli.vouchers.statements import statements, to_csv, to_json


def record(name: str, company: str, cluster: str, amount: str, share: str, end: str) -> Any:
    return {
        "metadata": {"name": name, "namespace": f"ns-{company}"},
        "spec": {
            "cluster": cluster,
            "gpuModel": "H100",
            "gpuSeconds": 3600,
            "amount": amount,
            "endTime": end,
            "program": {
                "name": "city",
                "company": company,
                "rule": "half",
                "programShare": share,
                "companyShare": str(Decimal(amount) - Decimal(share)),
            },
        },
    }


RECORDS = [
    record("r1", "acme", "a", "10.01", "5.00", "2026-03-02T00:00:00Z"),
    record("r2", "acme", "b", "3.33", "0.00", "2026-03-31T23:59:59Z"),
    record("r3", "bolt", "a", "7.77", "3.88", "2026-03-15T00:00:00Z"),
    record("r4", "bolt", "a", "9.00", "4.50", "2026-04-01T00:00:00Z"),  # next month
]


def test_company_and_center_statements_add_up_to_the_month_s_records() -> None:
    result = statements(RECORDS, "city", "2026-03")
    assert result.subsidy == Decimal("8.88")
    payable = sum((c.total.company_share for c in result.companies), Decimal(0))
    assert payable == Decimal("10.01") + Decimal("3.33") + Decimal("7.77") - Decimal("8.88")
    claims = {c.center: c.total.program_share for c in result.centers}
    assert claims == {"a": Decimal("8.88"), "b": Decimal("0.00")}
    assert [c.records for c in result.centers] == [["ns-acme/r1", "ns-bolt/r3"], ["ns-acme/r2"]]


def test_a_statement_regenerated_in_any_order_is_the_same_text() -> None:
    once = statements(RECORDS, "city", "2026-03")
    again = statements(list(reversed(RECORDS)), "city", "2026-03")
    assert to_json(once) == to_json(again)
    assert to_csv(once, "company") == to_csv(again, "company")
    assert to_csv(once, "center").splitlines()[1].startswith("a,8.88,")


# --- statements as objects --------------------------------------------------------------------


def test_the_objects_are_one_per_company_and_center_with_the_cli_s_figures() -> None:
    result = statements(RECORDS, "city", "2026-03")
    bodies = {body["metadata"]["name"]: body for body in statement_objects(result)}
    assert sorted(bodies) == [
        "city-2026-03-center-a",
        "city-2026-03-center-b",
        "city-2026-03-company-acme",
        "city-2026-03-company-bolt",
    ]
    for body in bodies.values():
        errors = kind_named("VoucherStatement").validate(body)  # type: ignore[union-attr]
        assert errors == [], errors
    acme = bodies["city-2026-03-company-acme"]["spec"]
    assert acme["totals"] == {
        "gpuSeconds": 7200,
        "amount": "13.34",
        "subsidy": "5.00",
        "payable": "8.34",
    }
    assert acme["usage"] == result.to_dict()["companies"][0]["usage"]
    assert acme["records"]["selector"] == (
        "suanli.io/program=city,suanli.io/month=2026-03,suanli.io/company=acme"
    )
    center = bodies["city-2026-03-center-a"]
    assert center["spec"]["totals"]["claim"] == "8.88"
    assert center["spec"]["records"]["count"] == 2
    assert center["metadata"]["labels"] == {
        "suanli.io/program": "city",
        "suanli.io/month": "2026-03",
        "suanli.io/statement-for": "Center",
        "suanli.io/center": "a",
        "app.kubernetes.io/managed-by": "suanli",
    }


def test_the_digest_is_the_documented_sha256_over_the_sorted_records() -> None:
    (center,) = [
        b
        for b in statement_objects(statements(RECORDS, "city", "2026-03"))
        if b["metadata"]["name"] == "city-2026-03-center-a"
    ]
    text = "ns-acme/r1 10.01 5.00 5.01\nns-bolt/r3 7.77 3.88 3.89\n"
    expected = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    assert center["spec"]["records"]["digest"] == expected


def test_names_are_dns_subdomains_and_never_shared_by_two_companies() -> None:
    upper = statement_name("city", "2026-03", StatementFor.COMPANY, "91310000MA1FL8TQ2X")
    lower = statement_name("city", "2026-03", StatementFor.COMPANY, "91310000ma1fl8tq2x")
    assert upper != lower
    assert upper.startswith("city-2026-03-company-91310000ma1fl8tq2x-")
    for name in (upper, lower, statement_name("c", "2026-03", StatementFor.COMPANY, "__")):
        assert is_dns_subdomain(name), name


def test_a_statement_is_open_in_its_month_and_closes_a_grace_period_after() -> None:
    (body, *_) = statement_objects(statements(RECORDS, "city", "2026-03"))
    spec = body["spec"]
    during = datetime(2026, 3, 20, tzinfo=UTC)
    first = next_status(None, spec, during)
    assert (first["phase"], first["revision"], first["conditions"]) == ("Open", 1, [])
    assert first["generatedAt"] == "2026-03-20T00:00:00Z"
    stored = {"spec": spec, "status": first}
    assert next_status(stored, spec, during + timedelta(days=3)) == first  # nothing to write
    just_after = datetime(2026, 4, 1, tzinfo=UTC) + CLOSE_GRACE - timedelta(seconds=1)
    assert next_status(stored, spec, just_after)["phase"] == "Open"
    closed = next_status(stored, spec, just_after + timedelta(seconds=1))
    assert (closed["phase"], closed["revision"]) == ("Closed", 1)
    assert closed["closedAt"] == "2026-04-02T00:00:00Z"
    assert [(c["type"], c["status"]) for c in closed["conditions"]] == [("Amended", "False")]


def test_a_closed_statement_changed_by_a_late_record_says_so() -> None:
    month_records = RECORDS[:3]
    (before, *_) = statement_objects(statements(month_records, "city", "2026-03"))
    closed_at = datetime(2026, 4, 5, tzinfo=UTC)
    stored = {"spec": before["spec"], "status": next_status(None, before["spec"], closed_at)}
    late = record("r5", "acme", "a", "2.00", "1.00", "2026-03-31T23:00:00Z")
    (after, *_) = statement_objects(statements([*month_records, late], "city", "2026-03"))
    assert after["metadata"]["name"] == before["metadata"]["name"]
    amended = next_status(stored, after["spec"], closed_at + timedelta(days=2))
    assert (amended["phase"], amended["revision"]) == ("Closed", 2)
    assert amended["closedAt"] == "2026-04-05T00:00:00Z"
    (condition,) = amended["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "Amended",
        "True",
        "LateRecords",
    )
    assert "2 records, subsidy 5.00" in condition["message"]
    assert "3 records, subsidy 6.00" in condition["message"]


def test_a_booked_record_marks_its_programme_month_once() -> None:
    dirty = DirtyMonths()
    for body in [*RECORDS, RECORDS[0], {"spec": {"endTime": "2026-03-01T00:00:00Z"}}]:
        dirty.mark_record(body)
    assert dirty.take() == {("city", "2026-03"), ("city", "2026-04")}
    assert dirty.take() == set()


# --- properties -------------------------------------------------------------------------------

CENTS = st.integers(min_value=0, max_value=10_000_000)


@st.composite
def month_records(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Records of one programme's month: any companies, centers, amounts and shares."""
    drawn = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["acme", "bolt", "91310000MA1FL8TQ2X"]),
                st.sampled_from(["a", "b", "c"]),
                CENTS,
                st.floats(min_value=0, max_value=1),
                st.integers(min_value=1, max_value=28),
            ),
            max_size=40,
        )
    )
    records = []
    for index, (company, center, cents, part, day) in enumerate(drawn):
        amount = Decimal(cents) / 100
        share = (amount * Decimal(str(part))).quantize(Decimal("0.01"), rounding="ROUND_DOWN")
        records.append(
            record(
                f"r{index}", company, center, str(amount), str(share), f"2026-03-{day:02}T00:00:00Z"
            )
        )
    return records


@given(month_records(), st.randoms())
def test_company_subsidies_and_center_claims_both_sum_to_the_records_to_the_cent(
    records: list[dict[str, Any]], shuffler: Any
) -> None:
    bodies = statement_objects(statements(records, "city", "2026-03"))
    shares = sum((Decimal(r["spec"]["program"]["programShare"]) for r in records), Decimal(0))
    owed = sum((Decimal(r["spec"]["program"]["companyShare"]) for r in records), Decimal(0))
    companies = [b["spec"] for b in bodies if b["spec"]["for"] == "Company"]
    centers = [b["spec"] for b in bodies if b["spec"]["for"] == "Center"]
    assert sum((Decimal(c["totals"]["subsidy"]) for c in companies), Decimal(0)) == shares
    assert sum((Decimal(c["totals"]["claim"]) for c in centers), Decimal(0)) == shares
    assert sum((Decimal(c["totals"]["payable"]) for c in companies), Decimal(0)) == owed
    assert sum(c["records"]["count"] for c in centers) == len(records)
    for company in companies:
        lines = sum((Decimal(u["subsidy"]) for u in company["usage"]), Decimal(0))
        assert lines == Decimal(company["totals"]["subsidy"])
    shuffled = list(records)
    shuffler.shuffle(shuffled)
    assert statement_objects(statements(shuffled, "city", "2026-03")) == bodies


@given(month_records())
def test_adding_a_record_changes_its_statements_digests(records: list[dict[str, Any]]) -> None:
    before = {
        b["metadata"]["name"]: b["spec"]["records"]["digest"]
        for b in statement_objects(statements(records, "city", "2026-03"))
    }
    extra = record("extra", "acme", "a", "0.00", "0.00", "2026-03-10T00:00:00Z")
    after = {
        b["metadata"]["name"]: b["spec"]["records"]["digest"]
        for b in statement_objects(statements([*records, extra], "city", "2026-03"))
    }
    for name in ("city-2026-03-company-acme", "city-2026-03-center-a"):
        assert after[name] != before.get(name)
    unchanged = set(before) - {"city-2026-03-company-acme", "city-2026-03-center-a"}
    assert all(after[name] == before[name] for name in unchanged)
