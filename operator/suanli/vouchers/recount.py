"""The recount: bringing a voucher's ledger back in line with the jobs and usage records that exist.

Admission holds a job's worst case *before* the job object is stored, so a create that fails
after admission (another webhook refused it, etcd timed out, the client gave up, the name was
taken) leaves a hold for a job that never came to be; the admission leader drops such holds
itself at their deadline (:mod:`suanli.vouchers.book`), and the recount catches whatever a
crash left behind. Kubernetes' ResourceQuota has the
same gap and closes it with a controller that periodically recomputes usage from the objects
that exist; :func:`recount` is that computation for a voucher. It also finishes whatever a
crash or a failed write left half done, so no charge is lost and none is made twice.

Everything is matched by the job's uid, never its name: a job deleted and created again under
the same name is another job, and a create answered AlreadyExists is a job that never existed.

* :func:`rebuild` derives a ledger from job statuses and usage records alone. It is exact only
  when every job's status is written, so it suits tests, audits and recovering a lost voucher
  status, not the periodic recount: a job admitted a moment ago has no status yet.
* :func:`recount` starts from the persisted ledger and changes only what the objects prove:

  - a usage record whose attempt the ledger has not charged is charged (the record was
    created, the voucher's write did not land); charges come from records only, never from
    a job's status, so a job listed from a stale cache can never be charged twice;
  - a hold whose job does not exist is closed and folded, but only once it is older than
    ``grace`` (its create may still be in flight; choose ``grace`` above the webhook timeout
    plus the API server's request timeout); a hold without a time is closed at once;
  - a hold whose job's status records how it ended (``status.chargedCost``, a zero
    reservation, Rejected) is closed: its records were charged above;
  - a job that records a hold on this voucher (``status.voucher``, ``status.reservation > 0``,
    not ended; or, before its status is written, the hold annotation it was stored with, see
    :mod:`suanli.vouchers.holds`) but has no entry gets its hold back, dated ``now``, with its
    records charged. This is also how a new admission leader rebuilds the holds of jobs the
    previous one admitted;
  - a tombstone (Charged or Released entry) is folded once its job is gone or its status
    records how it ended; its charge stays in ``spent`` through ``settled``. The ledger thus
    holds the jobs in flight, not every job that ever ran, and stays inside its size limit;
  - an entry of a format-1 ledger (keyed ``namespace/name``) is re-keyed by the uid of the job
    of that name, if there is one.

Pass every ComputeJob of the voucher's namespace (not only those whose status names the
voucher): a job created a moment ago has no status yet, and its existence alone keeps its hold.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from suanli.api.common import ZERO, parse_money
from suanli.api.computejob import ComputeJob, JobPhase
from suanli.vouchers.holds import read_hold
from suanli.vouchers.keys import job_key
from suanli.vouchers.ledger import (
    EntryState,
    JobEntry,
    Ledger,
    NotReservedError,
    ReservationRequest,
    VoucherTerms,
)


@dataclass(frozen=True, slots=True)
class RecordedCharge:
    """A usage record as the recount needs it: which job's attempt, and what it charged."""

    uid: str
    attempt: int
    amount: Decimal
    metered: Decimal
    voucher: str
    name: str = ""
    """The record's name, for messages."""


def recorded_charge(body: Mapping[str, Any]) -> RecordedCharge | None:
    """A stored UsageRecord as the recount reads it; None when it is not one it can use."""
    spec = body.get("spec") or {}
    job = spec.get("job") or {}
    try:
        return RecordedCharge(
            uid=str(job["uid"]),
            attempt=int(spec["attempt"]),
            amount=parse_money(spec["amount"]),
            metered=parse_money(spec["metered"]),
            voucher=str(spec["voucher"]),
            name=str((body.get("metadata") or {}).get("name") or ""),
        )
    except (KeyError, TypeError, ValueError):
        return None


def entry_from_job(job: ComputeJob, voucher_name: str) -> JobEntry | None:
    """What the job's status says it holds on voucher ``voucher_name``, if anything.

    ``None`` when the status does not name that voucher or records no reservation yet. The
    charge a status records is its own; the ledger charges from usage records only.
    """
    status = job.status
    if status.voucher is None and status.phase is None:
        return _entry_from_annotation(job, voucher_name)
    if status.voucher != voucher_name:
        return None
    gpus = status.total_gpus if status.total_gpus is not None else job.spec.total_gpus
    hold = status.estimated_cost if status.estimated_cost is not None else status.reservation
    name = job_key(job)
    if status.charged_cost is not None:
        return JobEntry(
            job=name,
            state=EntryState.CHARGED if status.charged_cost > ZERO else EntryState.RELEASED,
            hold=hold if hold is not None else status.charged_cost,
            gpus=gpus,
            charged=status.charged_cost,
        )
    reservation = status.reservation
    if reservation is None:
        return None
    if reservation == ZERO or status.phase is JobPhase.REJECTED:
        return JobEntry(job=name, state=EntryState.RELEASED, hold=hold or ZERO, gpus=gpus)
    return JobEntry(
        job=name,
        state=EntryState.RESERVED,
        hold=hold if hold is not None else reservation,
        gpus=gpus,
        reserved_at=job.metadata.creation_timestamp,
    )


def _entry_from_annotation(job: ComputeJob, voucher_name: str) -> JobEntry | None:
    """The hold a job was admitted for, from its annotation, while its status says nothing yet
    (the job was stored a moment ago; the annotation was stored with it)."""
    hold = read_hold(job.metadata.annotations)
    if hold is None or hold.voucher != voucher_name:
        return None
    return JobEntry(
        job=job_key(job),
        state=EntryState.RESERVED,
        hold=hold.amount,
        gpus=hold.gpus,
        reserved_at=job.metadata.creation_timestamp,
    )


def _charged(ledger: Ledger, uid: str, records: Iterable[RecordedCharge]) -> tuple[Ledger, int]:
    """``ledger`` with ``uid``'s records charged (those it has not charged), and how many."""
    count = 0
    for record in sorted(records, key=lambda r: r.attempt):
        try:
            after = ledger.charge(uid, record.attempt, record.amount, metered=record.metered)
        except NotReservedError:
            continue  # closed before this record: its hold is gone, nothing left to take
        count += after is not ledger
        ledger = after
    return ledger, count


def rebuild(
    terms: VoucherTerms,
    jobs: Iterable[ComputeJob],
    records: Iterable[RecordedCharge] = (),
    *,
    settled: Decimal = ZERO,
) -> Ledger:
    """A ledger from job statuses and usage records alone (see the module docs for when that
    is exact).

    Args:
        terms: the voucher's terms; jobs of other namespaces or vouchers are ignored.
        jobs: ComputeJobs of the voucher's namespace.
        records: the voucher's usage records.
        settled: what jobs that no longer exist were charged (their charges are not in any
            job's status any more), typically the persisted ledger's ``settled``.
    """
    namespace, _, name = terms.voucher.partition("/")
    by_uid = _records_by_uid(records, name)
    ledger = Ledger(terms, settled=settled)
    for job in jobs:
        uid = job.metadata.uid
        if job.metadata.namespace != namespace or not uid:
            continue
        seen = entry_from_job(job, name)
        if seen is None:
            continue
        ledger = ledger.record_hold(ReservationRequest(uid, seen.job, seen.hold, seen.gpus))
        ledger, _ = _charged(ledger, uid, by_uid.get(uid, ()))
        if not seen.is_active:
            ledger = ledger.close(uid)
    return ledger


def restore_hold(
    ledger: Ledger, job: ComputeJob, records: Iterable[RecordedCharge] = (), *, now: datetime
) -> Ledger:
    """``ledger`` with the hold ``job`` proves it has (its status, or the annotation it was
    stored with) when the ledger has no entry for it, with its records charged; else the same
    ledger. What the recount does for one job, for a job seen before the next recount."""
    uid = job.metadata.uid or ""
    _, _, name = ledger.terms.voucher.partition("/")
    seen = entry_from_job(job, name)
    if not uid or uid in ledger.entries or seen is None or not seen.is_active:
        return ledger
    ledger = ledger.record_hold(ReservationRequest(uid, seen.job, seen.hold, seen.gpus, now))
    return _charged(ledger, uid, _records_by_uid(records, name).get(uid, ()))[0]


def _records_by_uid(
    records: Iterable[RecordedCharge], voucher_name: str
) -> dict[str, list[RecordedCharge]]:
    by_uid: dict[str, list[RecordedCharge]] = {}
    for record in records:
        if record.voucher == voucher_name:
            by_uid.setdefault(record.uid, []).append(record)
    return by_uid


@dataclass(frozen=True, slots=True)
class RecountResult:
    """The recounted ledger and what changed, for events, logs and metrics.

    Attributes:
        ledger: the ledger to write (the same object when nothing changed).
        released: jobs (uid) whose holds were closed: leaked, gone, or ended on the job only.
        charged: usage records charged here (created, but the voucher's write was lost).
        restored: jobs (uid) whose hold was missing from the ledger and was taken again.
        forgotten: jobs (uid) whose tombstones were folded: the job is gone, or its status
            records how it ended.
        rekeyed: format-1 entries now keyed by their job's uid.
    """

    ledger: Ledger
    released: tuple[str, ...] = ()
    charged: tuple[str, ...] = ()
    restored: tuple[str, ...] = ()
    forgotten: tuple[str, ...] = ()
    rekeyed: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether the ledger needs a write."""
        return self.ledger is not self.ledger_before

    ledger_before: Ledger | None = None


def _ended(job: ComputeJob, voucher_name: str) -> bool:
    seen = entry_from_job(job, voucher_name)
    return seen is not None and not seen.is_active


def recount(
    ledger: Ledger,
    jobs: Iterable[ComputeJob],
    records: Iterable[RecordedCharge] = (),
    *,
    now: datetime,
    grace: timedelta,
    in_flight: Collection[str] = frozenset(),
) -> RecountResult:
    """Reconcile ``ledger`` with the jobs and records that exist; see the module docs.

    Args:
        ledger: the voucher's ledger as persisted.
        jobs: every ComputeJob of the voucher's namespace.
        records: the usage records of the voucher's namespace.
        now: the current time, to age holds against ``grace``.
        grace: how old a hold without a job must be before it counts as leaked.
        in_flight: uids of holds just admitted whose create may still be in flight (the
            book's pending holds): never counted as leaked here, whatever their age; the
            book drops them itself once their deadline has passed.
    """
    before = ledger
    namespace, _, name = ledger.terms.voucher.partition("/")
    listed = [job for job in jobs if job.metadata.namespace == namespace and job.metadata.uid]
    existing = {job.metadata.uid or "": job for job in listed}
    by_name = {job_key(job): job.metadata.uid or "" for job in listed}
    by_uid = _records_by_uid(records, name)
    released: list[str] = []
    charged: list[str] = []
    restored: list[str] = []
    forgotten: list[str] = []
    rekeyed: list[str] = []
    for key in sorted(ledger.entries):
        if "/" in key and key in by_name:  # a format-1 key: namespace/name
            ledger = ledger.rekey(key, by_name[key])
            rekeyed.append(by_name[key])
    for uid in sorted(ledger.entries):
        ledger, count = _charged(ledger, uid, by_uid.get(uid, ()))
        if count:
            charged.append(uid)
        entry = ledger.entries[uid]
        job = existing.get(uid)
        if job is None:
            if uid in in_flight:
                continue
            leaked = entry.reserved_at is None or now - entry.reserved_at >= grace
            if entry.is_active and not leaked:
                continue  # its create may still be in flight
        elif not _ended(job, name):
            continue
        if entry.is_active:
            ledger = ledger.close(uid)
            released.append(uid)
        ledger = ledger.fold(uid)
        forgotten.append(uid)
    for uid, job in sorted(existing.items()):
        restored_ledger = restore_hold(ledger, job, by_uid.get(uid, ()), now=now)
        if restored_ledger is not ledger:
            ledger = restored_ledger
            restored.append(uid)
    return RecountResult(
        ledger,
        tuple(released),
        tuple(charged),
        tuple(restored),
        tuple(forgotten),
        tuple(rekeyed),
        ledger_before=before,
    )
