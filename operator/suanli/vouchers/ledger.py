"""The ledger of one voucher: what is held for admitted jobs, what was charged, what is left.

A :class:`Ledger` is immutable. Every operation returns a new ledger (or the same one when
nothing changes) or raises a :class:`LedgerError`, so a handler can compute the next state,
write it with optimistic concurrency, and on a conflict simply start again from the state it
re-reads: nothing was mutated in between.

Terms and state
    The :class:`VoucherTerms` (amount, credit line, concurrency caps) come from the voucher's
    spec and may change when an admin edits it; the per-job entries and ``settled`` are the
    state the operator keeps in the voucher's status (see :meth:`Ledger.to_dict`).

Entries
    Each job the voucher paid for has one :class:`JobEntry`, keyed ``namespace/name``:

    * ``Reserved``: the worst case is held; the job counts towards active jobs and GPUs;
    * ``Charged``: the job's charge moved to spent and the rest of the hold was released;
    * ``Released``: the hold was dropped without a charge (the job never ran).

    Charged and Released entries are tombstones: they make a repeated settle or release a
    no-op (a job is charged exactly once) and refuse a second reservation under the same key.
    When the job object is gone, :meth:`Ledger.forget` drops its tombstone and folds a charge
    into ``settled``, so spent never changes when a tombstone goes.

The rules
    * ``reserve`` admits a hold only while ``reserved + spent + hold <= amount + creditLine``
      and the concurrency caps hold; reserving the same job for the same amount and GPUs again
      is a no-op, for another amount it is refused (:attr:`RefusalReason.RESERVATION_CONFLICT`).
    * ``settle`` charges at most the job's hold. Holds are worst cases, so a larger charge
      means the job outran its estimate (a deadline enforced late, several attempts); the
      excess is not charged, the entry keeps the metered amount in ``metered`` so it can be
      reported, and ``reserved + spent`` therefore never passes the ceiling. Settling an
      already charged job returns the ledger unchanged, whatever charge is given: the first
      charge is final.
    * ``release`` drops a hold without a charge; releasing a job that is not held (unknown,
      already charged or released) is a no-op, as deletes are in Kubernetes.

Derived balances
    ``reserved`` (held for Reserved entries), ``spent`` (``settled`` plus the charges of
    Charged entries), ``available`` (``amount + creditLine - spent - reserved``: what a new
    hold may take; negative only when an edit lowered the terms below what is committed),
    ``remaining`` (``amount - spent - reserved``, floored at 0, credit not included, as
    ``VoucherQuota.status.remaining`` is documented), ``owed`` (spent beyond ``amount``,
    drawn on the credit line), ``active_jobs`` and ``active_gpus`` (Reserved entries).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from types import MappingProxyType
from typing import Any, Final

from suanli.api.common import (
    ZERO,
    format_money,
    format_timestamp,
    parse_money,
    parse_timestamp,
)
from suanli.api.voucherquota import VoucherQuota
from suanli.vouchers.keys import voucher_key
from suanli.vouchers.refusals import Refusal, RefusalReason, join_messages

LEDGER_FORMAT: Final = 1
"""Version of the :meth:`Ledger.to_dict` layout, written as ``format``."""


class LedgerError(Exception):
    """An operation the ledger refuses; the ledger it was called on is unchanged."""


class ReservationRefusedError(LedgerError):
    """A reservation that would break a rule of the voucher; ``refusals`` say which."""

    def __init__(self, refusals: Iterable[Refusal]) -> None:
        self.refusals: tuple[Refusal, ...] = tuple(refusals)
        super().__init__(join_messages(self.refusals))

    @property
    def reason(self) -> RefusalReason:
        """The first refusal's reason."""
        return self.refusals[0].reason


class NotReservedError(LedgerError):
    """A charge for a job that holds no reservation (unknown, or released without charge)."""


class EntryState(StrEnum):
    """Where a job's money is: held, charged, or released without a charge."""

    RESERVED = "Reserved"
    CHARGED = "Charged"
    RELEASED = "Released"


@dataclass(frozen=True, slots=True)
class VoucherTerms:
    """What a voucher allows, from its spec; the ledger's fixed part.

    Attributes:
        voucher: ``namespace/name`` of the voucher, for messages.
        currency: the voucher's currency.
        amount: the voucher's value.
        credit_line: how far spending may go beyond ``amount``.
        max_concurrent_gpus: cap on GPUs held by Reserved entries, or ``None``.
        max_concurrent_jobs: cap on Reserved entries, or ``None``.
    """

    voucher: str
    currency: str
    amount: Decimal
    credit_line: Decimal = ZERO
    max_concurrent_gpus: int | None = None
    max_concurrent_jobs: int | None = None

    @classmethod
    def from_voucher(cls, voucher: VoucherQuota) -> VoucherTerms:
        """The terms a VoucherQuota's spec sets."""
        spec = voucher.spec
        return cls(
            voucher=voucher_key(voucher),
            currency=spec.currency,
            amount=spec.amount,
            credit_line=spec.credit_line,
            max_concurrent_gpus=spec.limits.max_concurrent_gpus,
            max_concurrent_jobs=spec.limits.max_concurrent_jobs,
        )

    @property
    def ceiling(self) -> Decimal:
        """The most ``spent + reserved`` may reach: amount plus credit line."""
        return self.amount + self.credit_line


@dataclass(frozen=True, slots=True)
class JobEntry:
    """One job's record on the voucher.

    Attributes:
        state: Reserved, Charged or Released.
        hold: the amount reserved at admission (kept after settle or release, for the record).
        gpus: GPUs the job holds while Reserved.
        charged: the charge, when Charged (at most ``hold``).
        metered: the charge as metered, when it exceeded ``hold`` and was capped; else None.
        reserved_at: when the hold was taken, if known; the recount uses it to tell a hold
            whose create is still in flight from a leaked one.
    """

    state: EntryState
    hold: Decimal
    gpus: int
    charged: Decimal | None = None
    metered: Decimal | None = None
    reserved_at: datetime | None = None

    @property
    def is_active(self) -> bool:
        """Whether the entry still holds money and GPUs."""
        return self.state is EntryState.RESERVED

    @property
    def capped(self) -> bool:
        """Whether the metered charge exceeded the hold and was capped at it."""
        return self.metered is not None


@dataclass(frozen=True, slots=True)
class ReservationRequest:
    """A request to hold ``amount`` and ``gpus`` for ``job`` (``namespace/name``).

    Attributes:
        job: the job's ledger key.
        amount: the worst-case cost to hold, in the voucher's currency.
        gpus: GPUs the job will hold.
        at: when the request was made (stored as the entry's ``reserved_at``).
    """

    job: str
    amount: Decimal
    gpus: int
    at: datetime | None = None


def _check_amount(what: str, value: Decimal) -> Decimal:
    try:
        return parse_money(value)
    except ValueError as error:
        raise ValueError(f"{what}: {error}") from None


@dataclass(frozen=True)
class Ledger:
    """The balances of one voucher (see the module docs for the rules).

    Attributes:
        terms: what the voucher allows.
        entries: per-job records, keyed ``namespace/name`` (read-only).
        settled: charges of jobs whose entries were forgotten; part of ``spent``.
    """

    terms: VoucherTerms
    entries: Mapping[str, JobEntry] = field(default_factory=dict)
    settled: Decimal = ZERO

    def __post_init__(self) -> None:
        # A private copy behind a read-only view: nobody can change a ledger after the fact.
        object.__setattr__(self, "entries", MappingProxyType(dict(self.entries)))

    # --- derived balances (computed once per ledger: it never changes) ------------------------

    @cached_property
    def reserved(self) -> Decimal:
        """Held for Reserved entries."""
        return sum((e.hold for e in self.entries.values() if e.is_active), ZERO)

    @cached_property
    def spent(self) -> Decimal:
        """Charged: ``settled`` plus the charges of Charged entries."""
        charges = (e.charged for e in self.entries.values() if e.state is EntryState.CHARGED)
        return sum((c for c in charges if c is not None), self.settled)

    @cached_property
    def active_jobs(self) -> int:
        """Reserved entries: admitted jobs not yet charged or released."""
        return sum(1 for e in self.entries.values() if e.is_active)

    @cached_property
    def active_gpus(self) -> int:
        """GPUs held by Reserved entries."""
        return sum(e.gpus for e in self.entries.values() if e.is_active)

    @property
    def committed(self) -> Decimal:
        """``spent + reserved``: what the ceiling bounds."""
        return self.spent + self.reserved

    @property
    def available(self) -> Decimal:
        """What a new hold may take: ``amount + creditLine - spent - reserved``.

        Negative only when the terms were lowered below what is already committed.
        """
        return self.terms.ceiling - self.committed

    @property
    def remaining(self) -> Decimal:
        """``amount - spent - reserved``, never below 0; the credit line is not included."""
        return max(ZERO, self.terms.amount - self.committed)

    @property
    def owed(self) -> Decimal:
        """How much of ``spent`` is beyond ``amount``: drawn on credit, to be paid later."""
        return max(ZERO, self.spent - self.terms.amount)

    def status_summary(self) -> dict[str, str | int]:
        """The balance fields of ``VoucherQuota.status``, with their wire names and forms."""
        return {
            "reserved": format_money(self.reserved),
            "spent": format_money(self.spent),
            "remaining": format_money(self.remaining),
            "owed": format_money(self.owed),
            "activeJobs": self.active_jobs,
            "activeGPUs": self.active_gpus,
        }

    # --- operations -----------------------------------------------------------------------------

    def with_terms(self, terms: VoucherTerms) -> Ledger:
        """The same entries under new terms (the voucher's spec was edited)."""
        return self if terms == self.terms else replace(self, terms=terms)

    def check_reserve(self, request: ReservationRequest) -> tuple[Refusal, ...]:
        """Why ``request`` cannot be reserved; empty when it can (or already is).

        Raises:
            ValueError: the amount is not money or the GPUs are negative.
        """
        return _refusals(self.terms, self._tally(), self.entries.get(request.job), request)

    def reserve_many(
        self, requests: Iterable[ReservationRequest]
    ) -> tuple[Ledger, tuple[tuple[Refusal, ...], ...]]:
        """Decide ``requests`` in order, each against the ledger left by the ones before.

        The same as calling :meth:`reserve` for each and collecting the refusals, in one pass
        (a running tally instead of a new ledger per request), so a batch costs one copy of the
        entries however many requests it has. Returns the new ledger (``self`` when no request
        added a hold) and, per request, its refusals (empty when admitted).

        Raises:
            ValueError: a request's amount is not money or its GPUs are negative.
        """
        entries = dict(self.entries)
        tally = self._tally()
        outcomes: list[tuple[Refusal, ...]] = []
        for request in requests:
            refusals = _refusals(self.terms, tally, entries.get(request.job), request)
            if not refusals and request.job not in entries:
                entry = _reserved_entry(request)
                entries[request.job] = entry
                tally.reserved += entry.hold
                tally.active_jobs += 1
                tally.active_gpus += entry.gpus
            outcomes.append(refusals)
        changed = len(entries) != len(self.entries)
        return (replace(self, entries=entries) if changed else self), tuple(outcomes)

    def _tally(self) -> _Tally:
        return _Tally(self.reserved, self.spent, self.active_jobs, self.active_gpus)

    def reserve(
        self, job: str, amount: Decimal, gpus: int, *, at: datetime | None = None
    ) -> Ledger:
        """Hold ``amount`` and ``gpus`` for ``job``.

        Idempotent: when ``job`` already holds the same amount and GPUs, returns ``self``.

        Raises:
            ReservationRefusedError: the hold would pass the ceiling or a concurrency cap, the job
                holds another amount, or the job was already charged or released.
            ValueError: the amount is not money or the GPUs are negative.
        """
        request = ReservationRequest(job, amount, gpus, at)
        refusals = self.check_reserve(request)
        if refusals:
            raise ReservationRefusedError(refusals)
        if job in self.entries:
            return self
        return self._with_entry(job, _reserved_entry(request))

    def settle(self, job: str, charge: Decimal) -> Ledger:
        """Charge ``job`` and release the rest of its hold; see the module docs for the cap.

        Returns ``self`` when the job was already charged: a job is charged exactly once.

        Raises:
            NotReservedError: the job holds no reservation (unknown or released).
            ValueError: ``charge`` is not money (negative, or more than two decimals).
        """
        charge = _check_amount("charge", charge)
        current = self.entries.get(job)
        if current is not None and current.state is EntryState.CHARGED:
            return self
        if current is None or current.state is not EntryState.RESERVED:
            state = "released without a charge" if current else "unknown"
            raise NotReservedError(
                f"job {job} cannot be charged on voucher {self.terms.voucher}: it is {state}"
            )
        capped = charge > current.hold
        entry = replace(
            current,
            state=EntryState.CHARGED,
            charged=current.hold if capped else charge,
            metered=charge if capped else None,
        )
        return self._with_entry(job, entry)

    def release(self, job: str) -> Ledger:
        """Drop ``job``'s hold without a charge; a no-op when the job holds nothing."""
        current = self.entries.get(job)
        if current is None or current.state is not EntryState.RESERVED:
            return self
        return self._with_entry(job, replace(current, state=EntryState.RELEASED))

    def record_hold(self, job: str, hold: Decimal, gpus: int, *, at: datetime | None) -> Ledger:
        """Record a hold a job proves it has, without the balance and concurrency checks.

        For the recount only: the hold is a fact found in a job's status, not a request, so it
        is recorded even when it takes the ledger past its ceiling (a later ``reserve`` is then
        refused until enough is charged or released). A job that already has an entry keeps
        it: returns ``self``.
        """
        if job in self.entries:
            return self
        request = ReservationRequest(job, hold, gpus, at)
        return self._with_entry(job, _reserved_entry(request))

    def forget(self, job: str) -> Ledger:
        """Drop the tombstone of a job whose object is gone; its charge stays in ``spent``.

        Forgetting a Reserved entry would lose a hold silently, so it releases nothing and
        returns ``self``: release the job first. Unknown jobs are a no-op.
        """
        current = self.entries.get(job)
        if current is None or current.is_active:
            return self
        entries = dict(self.entries)
        del entries[job]
        return replace(self, entries=entries, settled=self.settled + (current.charged or ZERO))

    def _with_entry(self, job: str, entry: JobEntry) -> Ledger:
        return replace(self, entries={**self.entries, job: entry})

    # --- persistence ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The state (not the terms) as a JSON-ready dict, for the voucher's status.

        Layout (money as two-decimal strings, times as RFC 3339)::

            {"format": 1, "settled": "1200.00",
             "entries": [{"job": "team-a/train", "state": "Reserved", "hold": "3200.00",
                          "gpus": 8, "reservedAt": "2026-03-01T08:00:00Z"}, ...]}

        ``charged`` and ``metered`` appear on Charged entries, ``reservedAt`` when known.
        Entries are sorted by job, so equal ledgers serialize equally (no spurious writes).
        """
        return {
            "format": LEDGER_FORMAT,
            "settled": format_money(self.settled),
            "entries": [_entry_to_dict(job, self.entries[job]) for job in sorted(self.entries)],
        }

    @classmethod
    def from_dict(cls, terms: VoucherTerms, data: Mapping[str, Any] | None) -> Ledger:
        """Restore the state :meth:`to_dict` wrote, under ``terms``; ``None`` is empty.

        Raises:
            ValueError: the data is not in the layout :meth:`to_dict` writes.
        """
        if not data:
            return cls(terms)
        if data.get("format") != LEDGER_FORMAT:
            raise ValueError(f"unknown ledger format {data.get('format')!r}")
        entries: dict[str, JobEntry] = {}
        for item in data.get("entries", []):
            job, entry = _entry_from_dict(item)
            if job in entries:
                raise ValueError(f"ledger lists job {job} twice")
            entries[job] = entry
        return cls(terms, entries, parse_money(data.get("settled", "0")))


def empty_ledger(voucher: VoucherQuota) -> Ledger:
    """A ledger with the voucher's terms and nothing held or spent."""
    return Ledger(VoucherTerms.from_voucher(voucher))


@dataclass(slots=True)
class _Tally:
    """The running totals a reservation is checked against (mutable, private)."""

    reserved: Decimal
    spent: Decimal
    active_jobs: int
    active_gpus: int


def _refusals(
    terms: VoucherTerms, tally: _Tally, current: JobEntry | None, request: ReservationRequest
) -> tuple[Refusal, ...]:
    """The rules of ``reserve`` (see the module docs), as refusals; empty when admissible."""
    amount = _check_amount("reservation amount", request.amount)
    if request.gpus < 0:
        raise ValueError(f"GPUs must not be negative, got {request.gpus}")
    if current is not None:
        return _repeat_refusals(terms, current, request, amount)
    name = terms.voucher
    refusals: list[Refusal] = []
    cap = terms.max_concurrent_jobs
    if cap is not None and tally.active_jobs + 1 > cap:
        refusals.append(
            Refusal(
                RefusalReason.CONCURRENT_JOBS_EXCEEDED,
                "spec.limits.maxConcurrentJobs",
                f"voucher {name} allows at most {cap} unfinished jobs at once "
                f"(spec.limits.maxConcurrentJobs) and {tally.active_jobs} are admitted: "
                "wait for one to finish",
            )
        )
    cap = terms.max_concurrent_gpus
    total = tally.active_gpus + request.gpus
    if cap is not None and total > cap:
        refusals.append(
            Refusal(
                RefusalReason.CONCURRENT_GPUS_EXCEEDED,
                "spec.limits.maxConcurrentGPUs",
                f"voucher {name} allows at most {cap} GPUs at once "
                f"(spec.limits.maxConcurrentGPUs): {tally.active_gpus} are held by "
                f"{tally.active_jobs} unfinished jobs and this job needs {request.gpus}, "
                f"{total} in all: {total - cap} over",
            )
        )
    available = terms.ceiling - tally.spent - tally.reserved
    if amount > available:
        currency = terms.currency
        refusals.append(
            Refusal(
                RefusalReason.INSUFFICIENT_BALANCE,
                "spec.amount",
                f"voucher {name} cannot cover this job: worst case "
                f"{_signed(amount)} {currency}, available {_signed(available)} {currency} "
                f"(amount {_signed(terms.amount)} + credit {_signed(terms.credit_line)} - spent "
                f"{_signed(tally.spent)} - reserved {_signed(tally.reserved)}): short by "
                f"{_signed(amount - available)} {currency}",
            )
        )
    return tuple(refusals)


def _repeat_refusals(
    terms: VoucherTerms, current: JobEntry, request: ReservationRequest, amount: Decimal
) -> tuple[Refusal, ...]:
    """A request for a job that has an entry: a no-op, a conflict, or a closed job."""
    name, currency = terms.voucher, terms.currency
    if current.state is not EntryState.RESERVED:
        done = "charged" if current.state is EntryState.CHARGED else "released"
        return (
            Refusal(
                RefusalReason.JOB_CLOSED,
                "status",
                f"job {request.job} was already {done} on voucher {name}; a finished job "
                "cannot reserve again (create it under a new name)",
            ),
        )
    if current.hold == amount and current.gpus == request.gpus:
        return ()
    return (
        Refusal(
            RefusalReason.RESERVATION_CONFLICT,
            "status",
            f"job {request.job} already holds {format_money(current.hold)} {currency} for "
            f"{current.gpus} GPUs on voucher {name}; a second reservation of "
            f"{format_money(amount)} {currency} for {request.gpus} GPUs conflicts with it",
        ),
    )


def _reserved_entry(request: ReservationRequest) -> JobEntry:
    return JobEntry(
        state=EntryState.RESERVED,
        hold=parse_money(request.amount),
        gpus=request.gpus,
        reserved_at=request.at,
    )


def _signed(value: Decimal) -> str:
    # format_money is for stored amounts, never negative; messages may show a negative balance.
    return f"-{format_money(-value)}" if value < 0 else format_money(value)


def _entry_to_dict(job: str, entry: JobEntry) -> dict[str, Any]:
    item: dict[str, Any] = {
        "job": job,
        "state": str(entry.state),
        "hold": format_money(entry.hold),
        "gpus": entry.gpus,
    }
    if entry.charged is not None:
        item["charged"] = format_money(entry.charged)
    if entry.metered is not None:
        item["metered"] = format_money(entry.metered)
    if entry.reserved_at is not None:
        item["reservedAt"] = format_timestamp(entry.reserved_at)
    return item


def _entry_from_dict(item: Mapping[str, Any]) -> tuple[str, JobEntry]:
    try:
        job = item["job"]
        state = EntryState(item["state"])
        gpus = item["gpus"]
        if not isinstance(job, str) or not isinstance(gpus, int) or gpus < 0:
            raise ValueError(f"bad job or gpus in ledger entry {dict(item)!r}")
        charged = item.get("charged")
        metered = item.get("metered")
        reserved_at = item.get("reservedAt")
        entry = JobEntry(
            state=state,
            hold=parse_money(item["hold"]),
            gpus=gpus,
            charged=None if charged is None else parse_money(charged),
            metered=None if metered is None else parse_money(metered),
            reserved_at=None if reserved_at is None else parse_timestamp(reserved_at),
        )
    except (KeyError, TypeError) as error:
        raise ValueError(f"malformed ledger entry {item!r}: {error!r}") from None
    if (entry.state is EntryState.CHARGED) != (entry.charged is not None):
        raise ValueError(f"ledger entry of {job} has state {state} but charged {charged!r}")
    return job, entry
