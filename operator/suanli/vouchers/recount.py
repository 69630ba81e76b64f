"""The recount: bringing a voucher's ledger back in line with the ComputeJobs that exist.

Admission reserves in the voucher's status *before* the job object is stored, so a create
that fails after admission (another webhook refused it, etcd timed out, the client gave up)
leaves a hold for a job that never came to be. Kubernetes' ResourceQuota has the same gap and
closes it with a controller that periodically recomputes usage from the objects that exist;
:func:`recount` is that computation for a voucher.

Two functions, for two situations:

* :func:`rebuild` derives a ledger from job statuses alone (``status.reservation``,
  ``status.chargedCost``, ``status.phase``). It is exact only when every job's status is
  written, so it suits tests, audits and recovering a lost voucher status, not the periodic
  recount: a job admitted a moment ago has no status yet and would be missed.
* :func:`recount` starts from the persisted ledger and changes only what the jobs prove:

  - a hold whose job does not exist is released, but only once it is older than ``grace``
    (its create may still be in flight; choose ``grace`` above the webhook timeout plus the
    API server's request timeout, e.g. a few minutes); a hold without a time is released at
    once;
  - a hold whose job records a charge (``status.chargedCost``) is settled with it, and one
    whose job records ``status.reservation == 0`` without a charge is released (the job's
    status was written, the voucher's was not);
  - a job that records a hold on this voucher (``status.voucher``, ``status.reservation > 0``,
    not charged) but has no entry gets its hold back, dated ``now``;
  - a tombstone (Charged or Released entry) is forgotten once its job is gone or its job's
    status records how it ended (``chargedCost``, or released); its charge stays in
    ``spent`` through ``settled``. The ledger thus holds the jobs in flight, not every job
    that ever ran, and the status write on each admission stays small.

  Charges are never re-created from job statuses: a job listed from a stale cache after its
  tombstone was forgotten would otherwise be charged twice. ``spent`` only grows by
  :meth:`~suanli.vouchers.ledger.Ledger.settle`.

Pass every ComputeJob of the voucher's namespace (not only those whose status names the
voucher): a job created a moment ago has no status yet, and its existence alone keeps its hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from suanli.api.common import ZERO
from suanli.api.computejob import ComputeJob, JobPhase
from suanli.vouchers.keys import job_key
from suanli.vouchers.ledger import EntryState, JobEntry, Ledger, VoucherTerms


def entry_from_job(job: ComputeJob, voucher_name: str) -> JobEntry | None:
    """What the job's status says it holds on voucher ``voucher_name``, if anything.

    ``None`` when the status does not name that voucher or records no reservation yet.
    """
    status = job.status
    if status.voucher != voucher_name:
        return None
    gpus = status.total_gpus if status.total_gpus is not None else job.spec.total_gpus
    hold = status.estimated_cost if status.estimated_cost is not None else status.reservation
    if status.charged_cost is not None:
        return JobEntry(
            state=EntryState.CHARGED,
            hold=hold if hold is not None else status.charged_cost,
            gpus=gpus,
            charged=status.charged_cost,
        )
    reservation = status.reservation
    if reservation is None:
        return None
    if reservation == ZERO or status.phase is JobPhase.REJECTED:
        return JobEntry(state=EntryState.RELEASED, hold=hold or ZERO, gpus=gpus)
    return JobEntry(
        state=EntryState.RESERVED,
        hold=reservation,
        gpus=gpus,
        reserved_at=job.metadata.creation_timestamp,
    )


def rebuild(terms: VoucherTerms, jobs: Iterable[ComputeJob], *, settled: Decimal = ZERO) -> Ledger:
    """A ledger from job statuses alone (see the module docs for when that is exact).

    Args:
        terms: the voucher's terms; jobs of other namespaces or vouchers are ignored.
        jobs: ComputeJobs of the voucher's namespace.
        settled: what jobs that no longer exist were charged (their charges are not in any
            job's status any more), typically the persisted ledger's ``settled``.
    """
    namespace, _, name = terms.voucher.partition("/")
    entries: dict[str, JobEntry] = {}
    for job in jobs:
        if job.metadata.namespace != namespace:
            continue
        entry = entry_from_job(job, name)
        if entry is not None:
            entries[job_key(job)] = entry
    return Ledger(terms, entries, settled)


@dataclass(frozen=True, slots=True)
class RecountResult:
    """The recounted ledger and what changed, for events, logs and metrics.

    Attributes:
        ledger: the ledger to write (the same object when nothing changed).
        released: jobs whose holds were released: leaked, or released on the job only.
        settled: jobs charged from their status (the job recorded a charge, the voucher not).
        restored: jobs whose hold was missing from the ledger and was taken again.
        forgotten: jobs whose tombstones were dropped: the job is gone, or its status records
            how it ended.
    """

    ledger: Ledger
    released: tuple[str, ...] = ()
    settled: tuple[str, ...] = ()
    restored: tuple[str, ...] = ()
    forgotten: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether the ledger needs a write."""
        return bool(self.released or self.settled or self.restored or self.forgotten)


def recount(
    ledger: Ledger, jobs: Iterable[ComputeJob], *, now: datetime, grace: timedelta
) -> RecountResult:
    """Reconcile ``ledger`` with the jobs that exist; see the module docs for the rules.

    Args:
        ledger: the voucher's ledger as persisted.
        jobs: every ComputeJob of the voucher's namespace.
        now: the current time, to age holds against ``grace``.
        grace: how old a hold without a job must be before it counts as leaked.
    """
    namespace, _, name = ledger.terms.voucher.partition("/")
    existing = {job_key(job): job for job in jobs if job.metadata.namespace == namespace}
    released: list[str] = []
    settled: list[str] = []
    restored: list[str] = []
    forgotten: list[str] = []
    for key, entry in sorted(ledger.entries.items()):
        job = existing.get(key)
        if job is None:
            if not entry.is_active:
                ledger = ledger.forget(key)
                forgotten.append(key)
            elif entry.reserved_at is None or now - entry.reserved_at >= grace:
                ledger = ledger.release(key).forget(key)
                released.append(key)
            continue
        seen = entry_from_job(job, name)
        if seen is None or seen.is_active:
            continue
        if entry.is_active:
            if seen.state is EntryState.CHARGED and seen.charged is not None:
                ledger = ledger.settle(key, seen.charged)
                settled.append(key)
            else:
                ledger = ledger.release(key)
                released.append(key)
        # The job's status records how it ended, so its tombstone has done its work: nothing
        # settles a job whose status says it was charged. Folding it into `settled` keeps the
        # ledger, written whole on every admission, as small as the jobs still in flight.
        ledger = ledger.forget(key)
        forgotten.append(key)
    for key, job in sorted(existing.items()):
        if key in ledger.entries:
            continue
        seen = entry_from_job(job, name)
        if seen is not None and seen.is_active:
            ledger = ledger.record_hold(key, seen.hold, seen.gpus, at=now)
            restored.append(key)
    return RecountResult(ledger, tuple(released), tuple(settled), tuple(restored), tuple(forgotten))
