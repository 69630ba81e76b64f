"""Which finished ComputeJobs have been kept long enough to leave the hub (``--job-retention``).

A city's year of jobs would otherwise all stay in the hub's etcd. A job may go once it has
finished *and* its charge is recorded (``status.chargedCost``, written in the same status write
as the Finished condition, after the job's usage records): deleting it then changes no money,
because its finalizer finds it charged and only folds its ledger entry, and its UsageRecords,
which have no owner, stay for the tenant and the auditor. A job without a recorded charge is
never due, whatever its phase or age: a Rejected job (admitted without a hold, which only a
bypassed webhook allows) stays for an admin to look at.

Pure: the selection reads the stored objects as the API server lists them (plain dicts, not
models: parsing every pod template of a year's jobs each pass would cost far more than the
few status fields read here) and the time it is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from suanli.api.common import parse_timestamp
from suanli.api.computejob import FINISHED_PHASES
from suanli.api.reasons import JobConditionType

MIN_PASS_SECONDS: Final = 1.0
MAX_PASS_SECONDS: Final = 60.0
"""Seconds between passes at most: a job leaves about a minute after its retention at worst."""
PER_PASS: Final = 100
"""Jobs deleted per pass at most, so turning retention on over a year's backlog deletes it at
a steady pace (each deletion also runs the finalizer and a voucher write) instead of in a
burst that crowds out admission and status writes."""
PAGE: Final = 500
"""Jobs listed per request (the API server's chunked list)."""


@dataclass(frozen=True, slots=True)
class Retirable:
    """A finished, charged job and when it finished."""

    namespace: str
    name: str
    uid: str
    voucher: str | None
    finished: datetime


def finished_and_charged(job: Mapping[str, Any]) -> Retirable | None:
    """The job as :class:`Retirable` if it finished and its charge is recorded, else None.

    Its finish time is ``status.completionTime``, else the Finished condition's transition.
    A job already being deleted is left to its finalizer.
    """
    metadata = job.get("metadata") or {}
    status = job.get("status") or {}
    if metadata.get("deletionTimestamp") or status.get("phase") not in FINISHED_PHASES:
        return None
    if status.get("chargedCost") is None:
        return None  # the charge is not recorded: never delete it
    finished = status.get("completionTime")
    if finished is None:
        finished = next(
            (
                condition.get("lastTransitionTime")
                for condition in status.get("conditions") or []
                if condition.get("type") == JobConditionType.FINISHED
                and condition.get("status") == "True"
            ),
            None,
        )
    uid, name = metadata.get("uid"), metadata.get("name")
    if finished is None or not uid or not name:
        return None
    try:
        moment = parse_timestamp(finished)
    except ValueError:
        return None  # not a time (the schema forbids it): kept, rather than stop every pass
    return Retirable(
        namespace=str(metadata.get("namespace") or ""),
        name=str(name),
        uid=str(uid),
        voucher=status.get("voucher"),
        finished=moment,
    )


def due(
    jobs: Iterable[Mapping[str, Any]], *, now: datetime, retention: timedelta
) -> list[Retirable]:
    """The finished, charged jobs that finished ``retention`` or longer before ``now``,
    the longest finished first."""
    found = (finished_and_charged(job) for job in jobs)
    return sorted(
        (job for job in found if job is not None and job.finished + retention <= now),
        key=lambda job: job.finished,
    )


def pass_interval(retention: timedelta) -> float:
    """Seconds between passes: a quarter of the retention, within 1 s and a minute."""
    return min(max(retention.total_seconds() / 4, MIN_PASS_SECONDS), MAX_PASS_SECONDS)
