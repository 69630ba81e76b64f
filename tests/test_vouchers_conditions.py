"""A voucher's Active / Expired / Exhausted / LedgerNearlyFull conditions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from suanli.api.voucherquota import VoucherQuota
from suanli.vouchers.conditions import voucher_conditions
from suanli.vouchers.ledger import Ledger, ReservationRequest, VoucherTerms

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def make_voucher(**spec: object) -> VoucherQuota:
    return VoucherQuota.model_validate(
        {
            "metadata": {"name": "v", "namespace": "t"},
            "spec": {
                "amount": "1000.00",
                "creditLine": "200.00",
                "validFrom": "2026-01-01T00:00:00Z",
                "validUntil": "2026-12-31T00:00:00Z",
                **spec,
            },
        }
    )


def states(voucher: VoucherQuota, reserved: str = "0") -> dict[str, tuple[str, str]]:
    ledger = Ledger(VoucherTerms.from_voucher(voucher))
    if Decimal(reserved):
        ledger = ledger.reserve(ReservationRequest("uid", "t/job", Decimal(reserved), 1, NOW))
    return {
        str(c.type): (str(c.status), str(c.reason))
        for c in voucher_conditions(voucher, ledger, NOW)
    }


def test_a_fresh_voucher_is_active() -> None:
    assert states(make_voucher()) == {
        "Active": ("True", "WithinValidity"),
        "Expired": ("False", "WithinValidity"),
        "Exhausted": ("False", "BalanceAvailable"),
        "LedgerNearlyFull": ("False", "LedgerHasRoom"),
    }


def test_an_expired_voucher_is_inactive() -> None:
    got = states(make_voucher(validUntil=(NOW - timedelta(days=1)).isoformat()))
    assert got["Expired"] == ("True", "ValidityEnded")
    assert got["Active"] == ("False", "ValidityEnded")


def test_a_voucher_not_yet_valid_is_inactive() -> None:
    got = states(make_voucher(validFrom=(NOW + timedelta(days=1)).isoformat()))
    assert got["Active"] == ("False", "NotYetValid")


@pytest.mark.parametrize(
    ("reserved", "exhausted", "active"),
    [
        ("999.99", ("False", "BalanceAvailable"), "True"),
        ("1100.00", ("False", "UsingCreditLine"), "True"),
        ("1200.00", ("True", "BalanceExhausted"), "False"),
    ],
)
def test_exhaustion_counts_the_credit_line(
    reserved: str, exhausted: tuple[str, str], active: str
) -> None:
    got = states(make_voucher(), reserved)
    assert got["Exhausted"] == exhausted
    assert got["Active"][0] == active


def test_the_ledger_warns_before_it_is_full() -> None:
    voucher = make_voucher()
    terms = replace(VoucherTerms.from_voucher(voucher), max_entries=10)
    ledger = Ledger(terms)
    for index in range(9):
        ledger = ledger.reserve(ReservationRequest(f"u{index}", f"t/j{index}", Decimal(1), 1))
    got = {str(c.type): c for c in voucher_conditions(voucher, ledger, NOW)}
    nearly = got["LedgerNearlyFull"]
    assert (str(nearly.status), str(nearly.reason)) == ("True", "LedgerNearlyFull")
    assert "9 of the 10" in nearly.message
