"""Statements from usage records: reproducible, and adding up to the records to the cent."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

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
