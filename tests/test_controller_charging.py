"""RecordBilling: usage records first, then the voucher's ledger; charged once, retried."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from suanli.api.voucherquota import VoucherQuota
from suanli.controller.charging import RecordBilling
from suanli.controller.status import AttemptRecord, JobIdentity, JobStatus
from suanli.vouchers.ledger import (
    EntryState,
    Ledger,
    ReservationRequest,
    VoucherGoneError,
    empty_ledger,
)

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


class Records:
    """The hub's usage records: create returns the stored one when the name exists."""

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}
        self.creates = 0

    async def create(self, plural: str, body: Mapping[str, Any]) -> dict[str, Any]:
        assert plural == "usagerecords"
        self.creates += 1
        return self.stored.setdefault(body["metadata"]["name"], dict(body))


def reserved(hold: str = "10.00") -> Ledger:
    request = ReservationRequest(JOB.uid, JOB.job_key, Decimal(hold), 2, T0)
    return empty_ledger(voucher()).reserve(request)


def attempt(hour: int, minutes: int, price: str = "2.00") -> AttemptRecord:
    start = T0 + timedelta(hours=hour)
    return AttemptRecord(
        cluster="member-a",
        gpu_model="H100",
        price_per_gpu_hour=Decimal(price),
        start_time=start,
        end_time=start + timedelta(minutes=minutes),
        reason="Succeeded",
    )


def ended(*attempts: AttemptRecord, hold: str = "10.00") -> JobStatus:
    status = JobStatus(voucher="budget", estimated_cost=Decimal(hold), attempts=list(attempts))
    billing = billing_on(FlakyWriter(reserved(hold)))
    for record in status.attempts:  # as the follow-up fills them in when each attempt ends
        assert record.start_time is not None and record.end_time is not None
        cost = billing.attempt_cost(
            status, record, start=record.start_time, end=record.end_time, gpus=2
        )
        record.gpu_seconds, record.charge = cost.gpu_seconds, cost.charge
    return status


def billing_on(writer: FlakyWriter, records: Records | None = None) -> RecordBilling:
    return RecordBilling(records or Records(), lambda ns, name: writer, lambda ns, name: "CNY")


def test_an_attempt_costs_its_gpu_seconds_at_its_price_capped_with_the_earlier_ones():
    status = ended(attempt(0, 60), attempt(2, 60), hold="6.00")
    # 2 GPUs x 1 h x 2.00 = 4.00 each; the hold of 6.00 leaves 2.00 for the second.
    assert [a.charge for a in status.attempts] == [Decimal("4.00"), Decimal("2.00")]
    billing = billing_on(FlakyWriter(reserved()))
    third = AttemptRecord(cluster="m", price_per_gpu_hour=Decimal("2.00"), start_time=T0)
    status.attempts.append(third)
    cost = billing.attempt_cost(status, third, start=T0, end=T0 + timedelta(hours=1), gpus=2)
    assert (cost.metered, cost.charge) == (Decimal("4.00"), Decimal("0.00"))


def test_a_failed_ledger_write_raises_and_its_retry_charges_once():
    writer, records = FlakyWriter(reserved(), failures=1), Records()
    billing = billing_on(writer, records)
    status = ended(attempt(0, 15), attempt(1, 30))

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await billing.settle(JOB, status, gpus=2, close=True)
        charge = await billing.settle(JOB, status, gpus=2, close=True)
        assert (charge.amount, charge.gpu_seconds) == (Decimal("3.00"), 5400)
        await billing.settle(JOB, status, gpus=2, close=True)  # again: changes nothing

    asyncio.run(main())
    entry = writer.ledger.entries[JOB.uid]
    assert (entry.state, entry.charged, entry.attempts) == (
        EntryState.CHARGED,
        Decimal("3.00"),
        {1, 2},
    )
    assert writer.ledger.spent == Decimal("3.00")
    assert len(records.stored) == 2  # one record per attempt, however often it was tried
    assert sorted(records.stored) == ["train-uid-1-1", "train-uid-1-2"]


def test_what_the_stored_record_says_is_what_is_charged():
    writer, records = FlakyWriter(reserved()), Records()
    status = ended(attempt(0, 15))
    asyncio.run(billing_on(writer, records).record(JOB, status, gpus=2))
    (name,) = records.stored
    records.stored[name]["spec"]["amount"] = "0.50"  # as an earlier life of the operator wrote
    asyncio.run(billing_on(writer, records).settle(JOB, status, gpus=2, close=False))
    assert writer.ledger.spent == Decimal("0.50")
    assert writer.ledger.entries[JOB.uid].state is EntryState.RESERVED


def test_a_gone_voucher_keeps_the_records_and_is_not_retried():
    records = Records()
    billing = billing_on(FlakyWriter(reserved(), gone=True), records)
    asyncio.run(billing.settle(JOB, ended(attempt(0, 15)), gpus=2, close=True))
    assert len(records.stored) == 1
