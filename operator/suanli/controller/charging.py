"""The money the controller touches, behind one small interface: :class:`Billing`.

Everything the controller does with money goes through it: what an attempt cost
(:meth:`Billing.attempt_cost`), what the whole job cost (:meth:`Billing.job_charge`), its usage
records (:meth:`Billing.record`) and the charge on its voucher (:meth:`Billing.settle`). The
rest of the controller writes these results into the job's status and decides *when* to call
them; the follow-up retries until the charge lands.

:class:`RecordBilling` charges from facts the hub recorded, never from a member: each ended
attempt in the job's status (cluster, model, price, start, end) becomes a UsageRecord, created
under a name derived from the job's uid and the attempt's number, and only then is the
voucher's ledger charged (per attempt, idempotent) and, at the job's end, closed. A retry, or
another process, finds the records it made and charges nothing twice; a crash between record
and ledger is finished by the next try or by the recount, which charges records the ledger has
not. The arithmetic (GPU-seconds, rounding, the cap at the hold) is the pure
:mod:`suanli.vouchers.usage`; the ledger's rules are :mod:`suanli.vouchers.ledger`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Protocol

from kubernetes.client.exceptions import ApiException

from suanli import metrics
from suanli.api.kinds import USAGERECORDS
from suanli.controller.status import AttemptRecord, JobIdentity, JobStatus
from suanli.vouchers.ledger import Ledger, NotReservedError, VoucherGoneError
from suanli.vouchers.recount import RecordedCharge, recorded_charge
from suanli.vouchers.usage import AttemptFacts, AttemptUsage, JobFacts, attempt_usages, usage_record

logger = logging.getLogger(__name__)

NO_CAP: Final = Decimal("Infinity")
"""The cap of a job whose status records no estimated cost: charges are then not capped."""


@dataclass(frozen=True, slots=True)
class AttemptCost:
    """What one attempt used and cost."""

    gpu_seconds: int
    charge: Decimal
    price_per_gpu_hour: Decimal
    metered: Decimal


@dataclass(frozen=True, slots=True)
class JobCharge:
    """What a whole job used and cost, over all its attempts."""

    gpu_seconds: int
    amount: Decimal


class Billing(Protocol):
    """The controller's one way to money (see the module notes)."""

    def attempt_cost(
        self,
        status: JobStatus,
        attempt: AttemptRecord | None,
        *,
        start: datetime,
        end: datetime,
        gpus: int,
    ) -> AttemptCost:
        """What ``attempt`` (the job's last) costs for ``gpus`` GPUs from ``start`` to ``end``,
        capped with the attempts before it at the job's hold. Pure."""
        ...

    def job_charge(self, status: JobStatus) -> JobCharge:
        """What the job's ended attempts, as recorded in ``status``, cost in all. Pure."""
        ...

    async def record(self, job: JobIdentity, status: JobStatus, *, gpus: int) -> JobCharge:
        """A usage record for every ended attempt (those that exist are found, not doubled).

        Raises when the hub did not take a record: the caller tries again.
        """
        ...

    async def settle(
        self, job: JobIdentity, status: JobStatus, *, gpus: int, close: bool
    ) -> JobCharge:
        """:meth:`record`, then charge the records on the voucher's ledger and, with ``close``,
        release the rest of the hold. Idempotent; raises when a write did not land."""
        ...


class RecordCreator(Protocol):
    """Creates an object, or returns the one of its name (:meth:`suanli.kube.Hub.create`)."""

    async def create(self, plural: str, body: Mapping[str, Any]) -> dict[str, Any]: ...


class ProgramSplitter(Protocol):
    """Splits charges on programme vouchers
    (:class:`~suanli.handlers.program_charges.ProgramCharges`)."""

    def split(
        self, namespace: str, voucher: str, uid: str, cluster: str, amount: Decimal
    ) -> dict[str, Any] | None: ...

    def booked(self, record: Mapping[str, Any]) -> None: ...


class LedgerChanger(Protocol):
    """One voucher's ledger writer (:class:`~suanli.handlers.ledger_writer.LedgerWriter`)."""

    async def change(self, change: Callable[[Ledger], Ledger]) -> Ledger: ...


Ledgers = Callable[[str, str], LedgerChanger]
"""The writer of a voucher's ledger, by (namespace, voucher name)."""
Currencies = Callable[[str, str], str]
"""A voucher's currency, by (namespace, voucher name)."""


def attempt_facts(status: JobStatus) -> list[AttemptFacts]:
    """The ended attempts of ``status``, numbered as the job's status lists them."""
    facts: list[AttemptFacts] = []
    for number, attempt in enumerate(status.attempts, start=1):
        if attempt.start_time is None or attempt.end_time is None:
            continue
        facts.append(
            AttemptFacts(
                number=number,
                cluster=attempt.cluster,
                gpu_model=attempt.gpu_model or "",
                price_per_gpu_hour=attempt.price_per_gpu_hour or Decimal(0),
                start=attempt.start_time,
                end=attempt.end_time,
                reason=attempt.reason or "Ended",
                provider=attempt.provider,
                region=attempt.region,
            )
        )
    return facts


def _hold(status: JobStatus) -> Decimal:
    return status.estimated_cost if status.estimated_cost is not None else NO_CAP


class RecordBilling:
    """:class:`Billing` through usage records and the vouchers' ledgers."""

    def __init__(
        self,
        records: RecordCreator,
        ledgers: Ledgers,
        currencies: Currencies,
        programs: ProgramSplitter | None = None,
    ) -> None:
        self._records = records
        self._ledgers = ledgers
        self._currencies = currencies
        self._programs = programs

    def attempt_cost(
        self,
        status: JobStatus,
        attempt: AttemptRecord | None,
        *,
        start: datetime,
        end: datetime,
        gpus: int,
    ) -> AttemptCost:
        price = Decimal(0)
        if attempt is not None and attempt.price_per_gpu_hour is not None:
            price = attempt.price_per_gpu_hour
        number = _number_of(status, attempt) if attempt is not None else len(status.attempts) + 1
        earlier = [facts for facts in attempt_facts(status) if facts.number < number]
        this = AttemptFacts(number, "", "", price, start, end, "")
        usage = attempt_usages([*earlier, this], gpus=gpus, hold=_hold(status))[-1]
        return AttemptCost(usage.gpu_seconds, usage.amount, price, usage.metered)

    def job_charge(self, status: JobStatus) -> JobCharge:
        ended = [a for a in status.attempts if a.ended]
        return JobCharge(
            gpu_seconds=sum(a.gpu_seconds or 0 for a in ended),
            amount=sum((a.charge or Decimal(0) for a in ended), Decimal(0)),
        )

    async def record(self, job: JobIdentity, status: JobStatus, *, gpus: int) -> JobCharge:
        await self._record(job, status, gpus)
        return self.job_charge(status)

    async def settle(
        self, job: JobIdentity, status: JobStatus, *, gpus: int, close: bool
    ) -> JobCharge:
        charged = await self._record(job, status, gpus)
        voucher = status.voucher or ""
        try:
            await self._ledgers(job.namespace, voucher).change(
                lambda ledger: _apply(ledger, job.uid, charged, close=close)
            )
        except VoucherGoneError:
            # Deleted with its namespace, say: the records stay, for the audit.
            logger.warning("job %s: its voucher is gone; its usage is recorded only", job.job_key)
        return self.job_charge(status)

    async def _record(self, job: JobIdentity, status: JobStatus, gpus: int) -> list[RecordedCharge]:
        voucher = status.voucher or ""
        usages: Sequence[AttemptUsage] = attempt_usages(
            attempt_facts(status), gpus=gpus, hold=_hold(status)
        )
        if not usages or not voucher:
            return []
        facts = JobFacts(
            job.namespace, job.name, job.uid, voucher, self._currencies(job.namespace, voucher)
        )
        charged: list[RecordedCharge] = []
        for usage in usages:
            split = None
            if self._programs is not None:
                split = self._programs.split(
                    job.namespace, voucher, job.uid, usage.facts.cluster, usage.amount
                )
            body = usage_record(facts, usage, split)
            try:
                stored = await self._records.create(USAGERECORDS, body)
            except ApiException as error:
                if not _namespace_terminating(error):
                    raise
                # The tenant's namespace is being deleted, its voucher with it: no record can
                # be kept there any more. The charge still reaches the ledger while it exists.
                logger.warning(
                    "%s's namespace is being deleted: attempt %d is charged without a record",
                    job.job_key,
                    usage.facts.number,
                )
                stored = body
            if self._programs is not None:
                self._programs.booked(stored)
            charge = recorded_charge(stored)
            if charge is None:  # cannot happen for a record we wrote; never charge a guess
                raise ValueError(f"usage record {stored['metadata']['name']} is malformed")
            charged.append(charge)
        return charged


def _namespace_terminating(error: ApiException) -> bool:
    """Whether the API server refused a create because the namespace is being deleted."""
    body = str(error.body or "")
    return error.status == 403 and ("NamespaceTerminating" in body or "being terminated" in body)


def _number_of(status: JobStatus, attempt: AttemptRecord) -> int:
    """The 1-based number of ``attempt`` among the job's attempts."""
    for number, candidate in enumerate(status.attempts, start=1):
        if candidate is attempt:
            return number
    return len(status.attempts) + 1


def _apply(ledger: Ledger, uid: str, charged: Sequence[RecordedCharge], *, close: bool) -> Ledger:
    for charge in charged:
        try:
            after = ledger.charge(uid, charge.attempt, charge.amount, metered=charge.metered)
        except NotReservedError as error:
            # Closed already (a late repeat), or a hold this ledger does not know: the record
            # stays the truth, and the recount reports it.
            logger.warning("usage record %s not charged: %s", charge.name, error)
            continue
        if after is not ledger:
            metrics.USAGE_RECORDS.inc()
            metrics.CHARGES.labels(ledger.terms.currency).inc(float(charge.amount))
        ledger = after
    return ledger.close(uid) if close else ledger
