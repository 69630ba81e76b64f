"""The billing state machine of one voucher: every hold, charge and release, keyed by job uid.

This is the one module that changes money. A :class:`Ledger` is immutable: every operation
returns a new ledger (or the same one when nothing changes) or raises a :class:`LedgerError`, so
a handler can compute the next state, write it with optimistic concurrency, and on a conflict
simply start again from the state it re-reads: nothing was mutated in between. Admission
reserves through it, the dispatcher charges and closes through it, the recount reconciles
through it; their writes all go through one writer per voucher.

Terms and state
    The :class:`VoucherTerms` (amount, credit line, concurrency caps) come from the voucher's
    spec and may change when an admin edits it; the per-job entries and ``settled`` are the
    state the operator keeps in the voucher's status (see :meth:`Ledger.to_dict`).

A charge's life, per ComputeJob uid
    ::

        Reserved --charge(attempt)--> Reserved (part of the hold now spent)
        Reserved --close--> Charged (something was charged) or Released (nothing was)
        Charged / Released --fold--> gone from the entries, its charge kept in ``settled``

    Entries are keyed by the ComputeJob's uid, never its name: a job deleted and created again
    under the same name is another job with another ledger entry, and a create refused as
    AlreadyExists can never settle anything of the job that holds the name.

    * ``reserve`` takes a hold only while ``reserved + spent + hold <= amount + creditLine``,
      the concurrency caps hold and the ledger has room for another entry; reserving the same
      uid for the same amount and GPUs again is a no-op, for another amount it is refused.
    * ``charge`` moves one attempt's usage (a usage record, see :mod:`suanli.vouchers.usage`)
      from the hold to spent. It is idempotent per (uid, attempt): a repeated delivery changes
      nothing. An amount above what is left of the hold is refused: usage is capped at the hold
      before it is recorded, so reserved + spent never passes the ceiling.
    * ``close`` releases what is left of the hold; the entry becomes a tombstone (Charged or
      Released) that makes any later reserve, charge or close of the uid a no-op or a refusal.
      Closing an unknown uid is a no-op, as deletes are in Kubernetes.
    * ``fold`` drops a tombstone once the job is gone or its status records how it ended; its
      charge moves into ``settled``, so ``spent`` never changes when a tombstone goes.

Derived balances
    ``reserved`` (what is left of the holds of Reserved entries), ``spent`` (``settled`` plus
    every entry's charges), ``available`` (``amount + creditLine - spent - reserved``: what a
    new hold may take; negative only when an edit lowered the terms below what is committed),
    ``remaining`` (``amount - spent - reserved``, floored at 0, credit not included, as
    ``VoucherQuota.status.remaining`` is documented), ``owed`` (spent beyond ``amount``, drawn
    on the credit line), ``active_jobs`` and ``active_gpus`` (Reserved entries).
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
from suanli.api.voucherquota import MAX_LEDGER_ENTRIES, VoucherQuota
from suanli.vouchers.keys import voucher_key
from suanli.vouchers.refusals import Refusal, RefusalReason, join_messages

LEDGER_FORMAT: Final = 2
"""Version of the :meth:`Ledger.to_dict` layout, written as ``format``. Format 1 keyed entries
by ``namespace/name``; such entries are read under that key and re-keyed by the recount."""
LEGACY_FORMAT: Final = 1


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
    """A charge for a job that holds no reservation (unknown, or closed without this attempt),
    or one larger than what is left of its hold."""


class VoucherGoneError(Exception):
    """The voucher was deleted while a change of its ledger waited to be written: the change
    has nowhere to go (raised by the writer; the controller and admission both handle it)."""


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
        max_entries: how many entries the ledger may hold (the voucher's status must fit in
            one etcd object).
    """

    voucher: str
    currency: str
    amount: Decimal
    credit_line: Decimal = ZERO
    max_concurrent_gpus: int | None = None
    max_concurrent_jobs: int | None = None
    max_entries: int = MAX_LEDGER_ENTRIES

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
        job: the job as ``namespace/name``, for people and messages (the key is its uid).
        state: Reserved, Charged or Released.
        hold: the amount reserved at admission (kept after close, for the record).
        gpus: GPUs the job holds while Reserved.
        charged: the sum of the attempts charged so far (at most ``hold``).
        attempts: the attempts (1-based) whose usage is in ``charged``.
        metered: what the attempts metered in all, when it exceeded what was charged (the
            excess beyond the hold is not charged); else None.
        reserved_at: when the hold was taken, if known; the recount uses it to tell a hold
            whose create is still in flight from a leaked one.
    """

    job: str
    state: EntryState
    hold: Decimal
    gpus: int
    charged: Decimal = ZERO
    attempts: frozenset[int] = frozenset()
    metered: Decimal | None = None
    reserved_at: datetime | None = None

    @property
    def is_active(self) -> bool:
        """Whether the entry still holds money and GPUs."""
        return self.state is EntryState.RESERVED

    @property
    def left(self) -> Decimal:
        """What is still held: the hold less what was charged, while Reserved."""
        return self.hold - self.charged if self.is_active else ZERO

    @property
    def capped(self) -> bool:
        """Whether the metered usage exceeded the hold and was capped at it."""
        return self.metered is not None


@dataclass(frozen=True, slots=True)
class ReservationRequest:
    """A request to hold ``amount`` and ``gpus`` for the job ``uid``.

    Attributes:
        uid: the ComputeJob's uid, the entry's key.
        job: the job as ``namespace/name``, for messages.
        amount: the worst-case cost to hold, in the voucher's currency.
        gpus: GPUs the job will hold.
        at: when the request was made (stored as the entry's ``reserved_at``).
    """

    uid: str
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
        entries: per-job records, keyed by ComputeJob uid (read-only).
        settled: charges of jobs whose entries were folded; part of ``spent``.
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
        """What is left of the holds of Reserved entries."""
        return sum((e.left for e in self.entries.values()), ZERO)

    @cached_property
    def spent(self) -> Decimal:
        """Charged: ``settled`` plus the charges of every entry."""
        return sum((e.charged for e in self.entries.values()), self.settled)

    @cached_property
    def active_jobs(self) -> int:
        """Reserved entries: admitted jobs not yet closed."""
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
        return _refusals(self.terms, self._tally(), self.entries.get(request.uid), request)

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
            refusals = _refusals(self.terms, tally, entries.get(request.uid), request)
            if not refusals and request.uid not in entries:
                entry = _reserved_entry(request)
                entries[request.uid] = entry
                tally.reserved += entry.hold
                tally.active_jobs += 1
                tally.active_gpus += entry.gpus
                tally.entries += 1
            outcomes.append(refusals)
        if len(entries) == len(self.entries):
            return self, tuple(outcomes)
        return replace(self, entries=entries)._with_tally(tally), tuple(outcomes)

    def _tally(self) -> _Tally:
        return _Tally(
            self.reserved, self.spent, self.active_jobs, self.active_gpus, len(self.entries)
        )

    def _with_tally(self, tally: _Tally) -> Ledger:
        """This ledger, its balances known already: ``tally`` is what summing its entries would
        give (kept up to date by :meth:`reserve_many`). Admission makes a new ledger per hold,
        and summing every entry again would make each hold cost O(entries)."""
        self.__dict__.update(
            reserved=tally.reserved,
            spent=tally.spent,
            active_jobs=tally.active_jobs,
            active_gpus=tally.active_gpus,
        )
        return self

    def reserve(self, request: ReservationRequest) -> Ledger:
        """Hold ``request.amount`` and ``request.gpus`` for the job ``request.uid``.

        Idempotent: when the uid already holds the same amount and GPUs, returns ``self``.

        Raises:
            ReservationRefusedError: the hold would pass the ceiling, a concurrency cap or the
                ledger's size, the job holds another amount, or it was already closed.
            ValueError: the amount is not money or the GPUs are negative.
        """
        refusals = self.check_reserve(request)
        if refusals:
            raise ReservationRefusedError(refusals)
        if request.uid in self.entries:
            return self
        return self._with_entry(request.uid, _reserved_entry(request))

    def charge(
        self, uid: str, attempt: int, amount: Decimal, *, metered: Decimal | None = None
    ) -> Ledger:
        """Move one attempt's charged ``amount`` from the job's hold to spent.

        Idempotent per attempt: charging an attempt already in the entry returns ``self``,
        whatever the amount (the first charge of an attempt is final).

        Args:
            uid: the job's uid.
            attempt: the attempt's number (1-based), as its usage record names it.
            amount: what the attempt is charged, at most what is left of the hold.
            metered: what the attempt metered, when the amount was capped below it.

        Raises:
            NotReservedError: the job holds no reservation (unknown, or closed before this
                attempt was charged), or ``amount`` is more than is left of its hold.
            ValueError: ``amount`` is not money.
        """
        amount = _check_amount("charge", amount)
        current = self.entries.get(uid)
        if current is not None and attempt in current.attempts:
            return self
        if current is None or not current.is_active:
            state = f"closed ({current.state})" if current else "unknown"
            raise NotReservedError(
                f"job {current.job if current else uid} cannot be charged for attempt "
                f"{attempt} on voucher {self.terms.voucher}: it is {state}"
            )
        if amount > current.left:
            raise NotReservedError(
                f"job {current.job}: attempt {attempt} would charge {format_money(amount)}, "
                f"but only {format_money(current.left)} of its hold is left"
            )
        charged = current.charged + amount
        before = current.metered if current.metered is not None else current.charged
        metered_total = before + (metered if metered is not None else amount)
        entry = replace(
            current,
            charged=charged,
            attempts=current.attempts | {attempt},
            metered=metered_total if metered_total != charged else None,
        )
        return self._with_entry(uid, entry)

    def close(self, uid: str) -> Ledger:
        """Release what is left of the job's hold: it becomes Charged (something was charged)
        or Released (nothing was). A no-op when the job holds nothing (unknown or closed)."""
        current = self.entries.get(uid)
        if current is None or not current.is_active:
            return self
        state = EntryState.CHARGED if current.charged > ZERO else EntryState.RELEASED
        return self._with_entry(uid, replace(current, state=state))

    def record_hold(self, request: ReservationRequest) -> Ledger:
        """Record a hold a job proves it has, without the balance and concurrency checks.

        For the recount only: the hold is a fact found in a job's status, not a request, so it
        is recorded even when it takes the ledger past its ceiling (a later ``reserve`` is then
        refused until enough is charged or released). A job that already has an entry keeps
        it: returns ``self``.
        """
        if request.uid in self.entries:
            return self
        return self._with_entry(request.uid, _reserved_entry(request))

    def fold(self, uid: str) -> Ledger:
        """Drop the tombstone of a job that is gone or whose status says how it ended; its
        charge stays in ``spent`` through ``settled``.

        Folding a Reserved entry would lose a hold silently, so it returns ``self``: close the
        job first. Unknown jobs are a no-op.
        """
        current = self.entries.get(uid)
        if current is None or current.is_active:
            return self
        entries = dict(self.entries)
        del entries[uid]
        return replace(self, entries=entries, settled=self.settled + current.charged)

    def rekey(self, old: str, uid: str) -> Ledger:
        """The entry kept under ``old`` (a format-1 ``namespace/name`` key), now under the
        job's ``uid``. A no-op when there is no such entry or the uid has one already."""
        current = self.entries.get(old)
        if current is None or uid in self.entries or old == uid:
            return self
        entries = dict(self.entries)
        del entries[old]
        entries[uid] = current
        return replace(self, entries=entries)

    def without_unstored(self, uids: Iterable[str]) -> Ledger:
        """The ledger less the holds of ``uids``: jobs admitted a moment ago whose create has
        not been seen stored yet (see :mod:`suanli.vouchers.book`).

        What the voucher's status records, so a create that fails after admission leaves no
        trace there. Only Reserved entries with nothing charged are left out (a charge proves
        the job exists); returns ``self`` when nothing is left out.
        """
        unstored = {
            uid
            for uid in uids
            if (entry := self.entries.get(uid)) is not None
            and entry.is_active
            and not entry.attempts
        }
        if not unstored:
            return self
        entries = {uid: e for uid, e in self.entries.items() if uid not in unstored}
        return replace(self, entries=entries)

    def _with_entry(self, uid: str, entry: JobEntry) -> Ledger:
        return replace(self, entries={**self.entries, uid: entry})

    # --- persistence ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The state (not the terms) as a JSON-ready dict, for the voucher's status.

        Layout (money as two-decimal strings, times as RFC 3339)::

            {"format": 2, "settled": "1200.00",
             "entries": [{"uid": "6f1c...", "job": "team-a/train", "state": "Reserved",
                          "hold": "3200.00", "gpus": 8, "charged": "120.00", "attempts": [1],
                          "reservedAt": "2026-03-01T08:00:00Z"}, ...]}

        ``charged`` and ``attempts`` appear once something was charged, ``metered`` when usage
        was capped, ``reservedAt`` when known. Entries are sorted by uid, so equal ledgers
        serialize equally (no spurious writes).
        """
        return {
            "format": LEDGER_FORMAT,
            "settled": format_money(self.settled),
            "entries": [_entry_to_dict(uid, self.entries[uid]) for uid in sorted(self.entries)],
        }

    @classmethod
    def from_dict(cls, terms: VoucherTerms, data: Mapping[str, Any] | None) -> Ledger:
        """Restore the state :meth:`to_dict` wrote, under ``terms``; ``None`` is empty.

        A format-1 ledger is read with each entry under its ``namespace/name`` key, to be
        re-keyed by uid by the recount (:meth:`rekey`).

        Raises:
            ValueError: the data is not in a layout :meth:`to_dict` writes or wrote.
        """
        if not data:
            return cls(terms)
        layout = data.get("format")
        if layout not in (LEDGER_FORMAT, LEGACY_FORMAT):
            raise ValueError(f"unknown ledger format {layout!r}")
        entries: dict[str, JobEntry] = {}
        for item in data.get("entries", []):
            uid, entry = _entry_from_dict(item, legacy=layout == LEGACY_FORMAT)
            if uid in entries:
                raise ValueError(f"ledger lists job {uid} twice")
            entries[uid] = entry
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
    entries: int


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
    if tally.entries >= terms.max_entries:
        refusals.append(
            Refusal(
                RefusalReason.LEDGER_FULL,
                "status.ledger",
                f"voucher {name} records {tally.entries} jobs in its ledger, the most it can "
                "hold: finished jobs leave it at the next recount (within a minute); submit "
                "again then, or use another voucher",
            )
        )
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
    """A request for a uid that has an entry: a no-op, a conflict, or a closed job."""
    name, currency = terms.voucher, terms.currency
    if current.state is not EntryState.RESERVED:
        done = "charged" if current.state is EntryState.CHARGED else "released"
        return (
            Refusal(
                RefusalReason.JOB_CLOSED,
                "status",
                f"job {request.job} (uid {request.uid}) was already {done} on voucher {name}; "
                "a finished job cannot reserve again",
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
        job=request.job,
        state=EntryState.RESERVED,
        hold=parse_money(request.amount),
        gpus=request.gpus,
        reserved_at=request.at,
    )


def _signed(value: Decimal) -> str:
    # format_money is for stored amounts, never negative; messages may show a negative balance.
    return f"-{format_money(-value)}" if value < 0 else format_money(value)


def _entry_to_dict(uid: str, entry: JobEntry) -> dict[str, Any]:
    item: dict[str, Any] = {
        "uid": uid,
        "job": entry.job,
        "state": str(entry.state),
        "hold": format_money(entry.hold),
        "gpus": entry.gpus,
    }
    if entry.attempts or entry.charged:
        item["charged"] = format_money(entry.charged)
        item["attempts"] = sorted(entry.attempts)
    if entry.metered is not None:
        item["metered"] = format_money(entry.metered)
    if entry.reserved_at is not None:
        item["reservedAt"] = format_timestamp(entry.reserved_at)
    return item


def _entry_from_dict(item: Mapping[str, Any], *, legacy: bool) -> tuple[str, JobEntry]:
    try:
        job = item["job"]
        uid = job if legacy else item["uid"]
        state = EntryState(item["state"])
        gpus = item["gpus"]
        if not isinstance(job, str) or not isinstance(uid, str) or not uid:
            raise ValueError(f"bad job or uid in ledger entry {dict(item)!r}")
        if not isinstance(gpus, int) or gpus < 0:
            raise ValueError(f"bad gpus in ledger entry {dict(item)!r}")
        charged = item.get("charged")
        metered = item.get("metered")
        reserved_at = item.get("reservedAt")
        attempts = item.get("attempts")
        if legacy and charged is not None:
            attempts = [1]  # format 1 charged a job once, whatever its attempts
        entry = JobEntry(
            job=job,
            state=state,
            hold=parse_money(item["hold"]),
            gpus=gpus,
            charged=ZERO if charged is None else parse_money(charged),
            attempts=frozenset(int(a) for a in attempts or ()),
            metered=None if metered is None else parse_money(metered),
            reserved_at=None if reserved_at is None else parse_timestamp(reserved_at),
        )
    except (KeyError, TypeError) as error:
        raise ValueError(f"malformed ledger entry {item!r}: {error!r}") from None
    if entry.charged > entry.hold:
        raise ValueError(f"ledger entry of {job} charges {charged}, above its hold")
    return uid, entry
