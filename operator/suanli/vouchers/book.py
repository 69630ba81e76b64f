"""Every voucher's ledger as the admission leader keeps it in memory, with the holds in flight.

The validating webhook answers from here, with no API write on its path: a hold it admits goes
into the voucher's ledger at once (so the next request, a microsecond later, sees it) and is
marked *pending* until the job is seen stored. The job itself carries its hold durably (the
annotation of :mod:`suanli.vouchers.holds`, stored in the same write as the job); the voucher's
status is written behind, coalesced per voucher, and records only holds whose job was seen
stored (:meth:`VoucherBook.durable`), so a create that fails after admission leaves no trace
there. A pending hold whose job is not stored by its deadline (the webhook timeout: the API
server stores a job no later than that after the webhook allowed it, or gives up) is dropped:
a forged AdmissionReview posted straight to the webhook, or a create another webhook refused,
costs the voucher nothing once the deadline has passed.

Only one process (the admission leader, see :mod:`suanli.leadership`) keeps a book; it is the
only writer of voucher ledgers, so its memory is the truth and the status a copy. A new leader
rebuilds each ledger from the voucher's status and the jobs that exist (the recount) before it
admits anything.

Everything here is synchronous and takes time as an argument: deciding a request and recording
its hold happen with no await in between, so N concurrent creates against a voucher that
affords K of them admit exactly K.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from suanli.vouchers.ledger import Ledger, ReservationRequest, VoucherTerms
from suanli.vouchers.refusals import Refusal, RefusalReason, join_messages

VoucherKey = tuple[str, str]
"""A voucher's namespace and name."""


@dataclass(frozen=True, slots=True)
class HoldDecision:
    """The answer to one request for a hold: admitted, or the refusals."""

    request: ReservationRequest
    refusals: tuple[Refusal, ...] = ()

    @property
    def admitted(self) -> bool:
        return not self.refusals

    @property
    def reason(self) -> RefusalReason | None:
        """The first refusal's reason, or None when admitted."""
        return self.refusals[0].reason if self.refusals else None

    @property
    def message(self) -> str:
        """The refusal messages for the admission response; empty when admitted."""
        return join_messages(self.refusals)


@dataclass(frozen=True, slots=True)
class PendingHold:
    """A hold admitted for a job that has not been seen stored yet.

    Attributes:
        uid: the job's uid (the ledger entry's key).
        voucher: the voucher that holds it.
        job: the job as ``namespace/name``, to look it up when the deadline passes.
        deadline: when the hold is dropped unless the job was seen stored.
    """

    uid: str
    voucher: VoucherKey
    job: str
    deadline: datetime


@dataclass
class VoucherBook:
    """Ledgers by voucher, and the pending holds among their entries (see the module docs)."""

    _ledgers: dict[VoucherKey, Ledger] = field(default_factory=dict)
    _pending: dict[str, PendingHold] = field(default_factory=dict)
    _pending_by_voucher: dict[VoucherKey, set[str]] = field(default_factory=dict)
    on_release: Callable[[str], object] = lambda uid: None
    """Told the uid of every hold that stops holding (closed, dropped, its voucher forgotten):
    a voucher programme releases its share of the hold (:mod:`suanli.vouchers.programs`)."""

    # --- vouchers -------------------------------------------------------------------------

    def knows(self, key: VoucherKey) -> bool:
        """Whether the voucher's ledger is loaded."""
        return key in self._ledgers

    def ledger(self, key: VoucherKey) -> Ledger | None:
        """The voucher's ledger with every hold, pending ones included; None when not loaded."""
        return self._ledgers.get(key)

    def load(self, key: VoucherKey, ledger: Ledger) -> Ledger:
        """Adopt ``ledger`` (read from the voucher's status) unless the book has one already:
        once loaded, memory is the truth and the status only its copy. Returns the book's."""
        return self._ledgers.setdefault(key, ledger)

    def set_terms(self, key: VoucherKey, terms: VoucherTerms) -> None:
        """The voucher's spec was edited: its ledger keeps its entries under the new terms."""
        ledger = self._ledgers.get(key)
        if ledger is not None:
            self._ledgers[key] = ledger.with_terms(terms)

    def forget(self, key: VoucherKey) -> None:
        """The voucher is gone: its ledger and pending holds go with it."""
        ledger = self._ledgers.pop(key, None)
        for uid, entry in ledger.entries.items() if ledger is not None else ():
            if entry.is_active:
                self.on_release(uid)
        for uid in self._pending_by_voucher.pop(key, set()):
            self._pending.pop(uid, None)

    # --- admission ------------------------------------------------------------------------

    def admit(
        self, key: VoucherKey, request: ReservationRequest, deadline: datetime
    ) -> HoldDecision:
        """Decide ``request`` against the voucher's ledger and, when admitted, hold it as
        pending until ``deadline``. Admitting a uid that already holds the same amount is a
        no-op that keeps its state (pending or stored).

        Raises:
            KeyError: the voucher's ledger is not loaded.
        """
        ledger = self._ledgers[key]
        new, (refusals,) = ledger.reserve_many([request])
        decision = HoldDecision(request, refusals)
        if new is not ledger:
            self._ledgers[key] = new
            self._pending[request.uid] = PendingHold(request.uid, key, request.job, deadline)
            self._pending_by_voucher.setdefault(key, set()).add(request.uid)
        return decision

    def is_pending(self, uid: str) -> bool:
        """Whether ``uid`` holds a pending hold."""
        return uid in self._pending

    def pending_uids(self, key: VoucherKey) -> frozenset[str]:
        """The uids of the voucher's pending holds."""
        return frozenset(self._pending_by_voucher.get(key, ()))

    def pending_count(self) -> int:
        """How many holds are pending, over every voucher."""
        return len(self._pending)

    def confirm(self, uid: str) -> VoucherKey | None:
        """The job ``uid`` was seen stored: its hold is no longer pending. Returns the voucher
        whose recorded ledger now differs (to be written), or None when nothing was pending."""
        pending = self._pop_pending(uid)
        return pending.voucher if pending is not None else None

    def pending(self) -> list[PendingHold]:
        """Every pending hold, oldest deadline first."""
        return sorted(self._pending.values(), key=lambda p: p.deadline)

    def due(self, now: datetime) -> list[PendingHold]:
        """Pending holds whose deadline has passed, oldest first."""
        return [p for p in self.pending() if p.deadline <= now]

    def drop(self, uid: str) -> VoucherKey | None:
        """The job ``uid`` was never stored: release its pending hold. Returns the voucher
        whose ledger changed, or None when ``uid`` was not pending. The voucher's recorded
        ledger never listed the hold, so it needs no write."""
        pending = self._pop_pending(uid)
        if pending is None:
            return None
        ledger = self._ledgers.get(pending.voucher)
        if ledger is not None:
            # Close then fold: a hold with nothing charged leaves no trace in `spent`.
            self._ledgers[pending.voucher] = ledger.close(uid).fold(uid)
        self.on_release(uid)
        return pending.voucher

    def _pop_pending(self, uid: str) -> PendingHold | None:
        pending = self._pending.pop(uid, None)
        if pending is not None:
            uids = self._pending_by_voucher.get(pending.voucher)
            if uids is not None:
                uids.discard(uid)
                if not uids:
                    del self._pending_by_voucher[pending.voucher]
        return pending

    # --- charging and the recount ---------------------------------------------------------

    def change(self, key: VoucherKey, change: Callable[[Ledger], Ledger]) -> Ledger:
        """Apply ``change`` to the voucher's ledger; an error it raises leaves it unchanged.

        Raises:
            KeyError: the voucher's ledger is not loaded.
        """
        before = self._ledgers[key]
        ledger = change(before)
        self._ledgers[key] = ledger
        if ledger is not before:
            for uid, entry in before.entries.items():
                after = ledger.entries.get(uid)
                if entry.is_active and (after is None or not after.is_active):
                    self.on_release(uid)
        return ledger

    def durable(self, key: VoucherKey) -> Ledger | None:
        """What the voucher's status records: the ledger less its pending holds."""
        ledger = self._ledgers.get(key)
        if ledger is None:
            return None
        return ledger.without_unstored(self._pending_by_voucher.get(key, ()))
