"""The money the controller touches, behind one small interface: :class:`Billing`.

Everything the controller does with money goes through it: what an attempt on a member cost
(:meth:`Billing.attempt_cost`), what the whole job cost (:meth:`Billing.job_charge`), and the
charge on the tenant's voucher when the job is over (:meth:`Billing.settle`). The rest of the
controller records these results in the job's status and decides *when* to call them: the
follow-up retries a settle that failed until it lands, and the job is not forgotten before.

:class:`LedgerBilling` is today's implementation, moved here unchanged from the dispatcher:
the cost is GPU-seconds (whole seconds times GPUs held) at the attempt's recorded price, and
the charge settles the job's entry in its voucher's ledger through the voucher's writer
(charged once, the rest of the hold released). It is meant to be replaced whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from suanli.controller.status import AttemptRecord, JobIdentity, JobStatus
from suanli.handlers.ledger_writer import VoucherGoneError
from suanli.vouchers.ledger import EntryState, Ledger, NotReservedError
from suanli.vouchers.pricing import charge_for, gpu_seconds

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AttemptCost:
    """What one attempt used and cost."""

    gpu_seconds: int
    charge: Decimal
    price_per_gpu_hour: Decimal


@dataclass(frozen=True, slots=True)
class JobCharge:
    """What a whole job used and cost, over all its attempts."""

    gpu_seconds: int
    amount: Decimal


class Billing(Protocol):
    """The controller's one way to money (see the module notes)."""

    def attempt_cost(
        self, attempt: AttemptRecord | None, *, start: datetime, end: datetime, gpus: int
    ) -> AttemptCost:
        """What ``attempt`` cost for running ``gpus`` GPUs from ``start`` to ``end``. Pure."""
        ...

    def job_charge(self, status: JobStatus) -> JobCharge:
        """What the job's attempts, as recorded in ``status``, cost in all. Pure."""
        ...

    async def settle(
        self, job: JobIdentity, status: JobStatus, *, deleted: bool = False
    ) -> JobCharge:
        """Charge the job on its voucher and release the rest of its hold; idempotent (a job
        is charged once however often this is called). ``deleted``: the job was deleted, and
        its finalizer releases the hold of a job that used nothing.

        Raises when the charge could not be recorded and may be later (the hub refused or
        did not answer): the caller tries again.
        """
        ...


class LedgerChanger(Protocol):
    """One voucher's ledger writer (:class:`~suanli.handlers.ledger_writer.LedgerWriter`)."""

    async def change(self, change: Callable[[Ledger], Ledger]) -> Ledger: ...


Ledgers = Callable[[str, str], LedgerChanger]
"""The writer of a voucher's ledger, by (namespace, voucher name)."""


class LedgerBilling:
    """:class:`Billing` on the vouchers' ledgers, as the operator has charged so far."""

    def __init__(self, ledgers: Ledgers) -> None:
        self._ledgers = ledgers

    def attempt_cost(
        self, attempt: AttemptRecord | None, *, start: datetime, end: datetime, gpus: int
    ) -> AttemptCost:
        price = Decimal(0)
        if attempt is not None and attempt.price_per_gpu_hour is not None:
            price = attempt.price_per_gpu_hour
        used = gpu_seconds(start, end, gpus)
        return AttemptCost(used, charge_for(used, price), price)

    def job_charge(self, status: JobStatus) -> JobCharge:
        attempts = status.attempts
        return JobCharge(
            gpu_seconds=sum(a.gpu_seconds or 0 for a in attempts),
            amount=sum((a.charge or Decimal(0) for a in attempts), Decimal(0)),
        )

    async def settle(
        self, job: JobIdentity, status: JobStatus, *, deleted: bool = False
    ) -> JobCharge:
        charge = self.job_charge(status)
        if deleted and not any(a.charge for a in status.attempts):
            return charge  # used nothing: the finalizer releases the hold
        await self._settle_ledger(job, status.voucher, charge.amount)
        return charge

    async def _settle_ledger(self, job: JobIdentity, voucher: str | None, amount: Decimal) -> None:
        writer = self._ledgers(job.namespace, voucher or "")
        key = job.ledger_key

        def settle(ledger: Ledger) -> Ledger:
            entry = ledger.entries.get(key)
            if entry is None or entry.state is not EntryState.RESERVED:
                return ledger  # charged or released already: exactly once
            return ledger.settle(key, amount)

        try:
            await writer.change(settle)
        except NotReservedError:
            logger.info("job %s had nothing reserved to settle", key)
        except VoucherGoneError:
            # Deleted with its namespace, say: there is no ledger left to charge.
            logger.warning("job %s: its voucher is gone; the charge is not recorded", key)
