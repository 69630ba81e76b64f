"""LedgerBilling: today's money rules behind the Billing interface, on a voucher's ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from suanli.api.voucherquota import VoucherQuota
from suanli.controller.charging import LedgerBilling
from suanli.controller.status import AttemptRecord, JobIdentity, JobStatus
from suanli.handlers.ledger_writer import VoucherGoneError
from suanli.vouchers.ledger import EntryState, Ledger, empty_ledger

JOB = JobIdentity("tenant-a", "train", "uid-1", 1, None)
T0 = datetime(2026, 11, 21, 9, tzinfo=UTC)


def voucher() -> VoucherQuota:
    return VoucherQuota.model_validate(
        {
            "metadata": {"name": "budget", "namespace": "tenant-a"},
            "spec": {"amount": "100.00", "currency": "CNY", "validUntil": "2030-01-01T00:00:00Z"},
        }
    )


class FlakyWriter:
    """A voucher's ledger writer whose first ``failures`` changes fail (a 504)."""

    def __init__(self, ledger: Ledger, failures: int = 0, gone: bool = False) -> None:
        self.ledger = ledger
        self.failures = failures
        self.gone = gone
        self.changes = 0

    async def change(self, change: Callable[[Ledger], Ledger]) -> Ledger:
        self.changes += 1
        if self.gone:
            raise VoucherGoneError("voucher tenant-a/budget is gone")
        if self.failures:
            self.failures -= 1
            raise TimeoutError("the hub did not answer (504)")
        self.ledger = change(self.ledger)
        return self.ledger


def reserved() -> Ledger:
    return empty_ledger(voucher()).reserve(JOB.ledger_key, Decimal("10.00"), 2, at=T0)


def status(*charges: str) -> JobStatus:
    return JobStatus(
        voucher="budget",
        attempts=[
            AttemptRecord(cluster="m", gpu_seconds=60, charge=Decimal(charge)) for charge in charges
        ],
    )


def test_an_attempt_costs_its_whole_gpu_seconds_at_its_price() -> None:
    billing = LedgerBilling(lambda namespace, name: FlakyWriter(reserved()))
    attempt = AttemptRecord(cluster="m", price_per_gpu_hour=Decimal("2.00"))
    cost = billing.attempt_cost(attempt, start=T0, end=T0 + timedelta(seconds=1800.9), gpus=2)
    assert (cost.gpu_seconds, cost.charge, cost.price_per_gpu_hour) == (
        3600,
        Decimal("2.00"),
        Decimal("2.00"),
    )
    assert billing.attempt_cost(None, start=T0, end=T0, gpus=2).charge == Decimal(0)


def test_a_failed_settle_raises_and_its_retry_charges_once() -> None:
    writer = FlakyWriter(reserved(), failures=1)
    billing = LedgerBilling(lambda namespace, name: writer)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await billing.settle(JOB, status("1.50", "0.25"))
        charge = await billing.settle(JOB, status("1.50", "0.25"))
        assert (charge.amount, charge.gpu_seconds) == (Decimal("1.75"), 120)
        await billing.settle(JOB, status("1.50", "0.25"))  # again: changes nothing

    asyncio.run(main())
    entry = writer.ledger.entries[JOB.ledger_key]
    assert entry.state is EntryState.CHARGED
    assert writer.ledger.spent == Decimal("1.75")


def test_a_deleted_job_that_used_nothing_is_left_to_its_finalizer() -> None:
    writer = FlakyWriter(reserved())
    billing = LedgerBilling(lambda namespace, name: writer)
    asyncio.run(billing.settle(JOB, status("0.00"), deleted=True))
    assert writer.changes == 0
    assert writer.ledger.entries[JOB.ledger_key].state is EntryState.RESERVED


def test_a_gone_voucher_is_not_retried() -> None:
    billing = LedgerBilling(lambda namespace, name: FlakyWriter(reserved(), gone=True))
    asyncio.run(billing.settle(JOB, status("1.00")))  # logged, nothing to retry
