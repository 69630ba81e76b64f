"""Follow-up: a placed job's progress mirrored into its status, to its end and its charge.

Each report of a job's remote Job (via workload sync) is mirrored: all replicas ready is
Running; Complete or Failed ends the attempt with its GPU time and cost (:mod:`.charging`
prices it) and closes the job. An attempt also ends when the job leaves its member: the
member stopped answering for longer than the grace period (the time it ran is charged), or
its pods stayed unschedulable there (the member's scheduler and our capacity view disagree;
nothing is charged): the job is queued again, elsewhere, until it has had ``max_attempts``.

Closing a job is a loop that ends only when its charge has landed and its final status is
written: the settle on the voucher can fail (a 429, a 504, a run of conflicts) and is then
tried again after 1, 2, 5, 10, then every 30 seconds. Until then the job stays in the book,
ended (nothing the member reports starts it again, its GPUs no longer count as held) but not
forgotten; were it forgotten first, its hold would stay reserved until a restart. Deleting
the job ends the loop: the finalizer charges it instead.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from suanli import metrics
from suanli.api.common import format_money, format_timestamp, parse_timestamp
from suanli.api.computejob import JobPhase
from suanli.api.names import JOB_UID_LABEL
from suanli.api.reasons import JobConditionType, JobReason
from suanli.controller.charging import AttemptCost, Billing
from suanli.controller.jobs import JobBook
from suanli.controller.ports import (
    Clock,
    Dispatching,
    EventRecorder,
    Members,
    Obj,
    Sleep,
    Spawn,
)
from suanli.controller.status import (
    ATTEMPT_MESSAGE_MAX,
    StatusWriter,
    TrackedJob,
    whole_seconds,
)
from suanli.dispatch.capacity import CapacityIndex
from suanli.dispatch.models import JobRequest
from suanli.kits.retry import delay_after
from suanli.kube import NotFoundError
from suanli.members.failures import describe as describe_failure
from suanli.members.failures import pod_failures

logger = logging.getLogger(__name__)


@dataclass
class FollowUp:
    book: JobBook
    index: CapacityIndex
    members: Members
    writer: StatusWriter
    events: EventRecorder
    billing: Billing
    dispatching: Dispatching
    spawn: Spawn
    clock: Clock
    max_attempts: int
    unschedulable_seconds: float
    sleep: Sleep = asyncio.sleep
    monotonic: Callable[[], float] = time.monotonic
    recorded: Callable[[TrackedJob], Coroutine[Any, Any, None]] | None = None
    """Called once a job's outcome is recorded (workload sync releases its remote Job)."""
    remove_remote: Callable[[TrackedJob], Awaitable[bool]] | None = None
    """Deletes a job's remote workload, raising when the member does not answer (workload
    sync), for a job withdrawn from its member."""
    # Jobs (uid) whose pods the member's scheduler refused, and since when (monotonic).
    _unschedulable_since: dict[str, float] = field(default_factory=dict)

    # --- remote progress ------------------------------------------------------------------------

    async def follow(self, tracked: TrackedJob, remote: Obj) -> None:
        """Mirror the remote Job's progress; close the job once the Job has ended."""
        if tracked.ended:
            return
        remote_status = remote.get("status") or {}
        conditions = {c.get("type"): c for c in remote_status.get("conditions") or []}
        ended = next(
            (
                conditions[t]
                for t in ("Complete", "Failed")
                if conditions.get(t, {}).get("status") == "True"
            ),
            None,
        )
        if ended is not None:
            await self._finish(tracked, remote_status, ended)
            return
        # Ready pods, not active ones: a Pending pod is active. (Job controllers before
        # Kubernetes 1.24 do not count ready pods; there, active is the best there is.)
        counted = "ready" if "ready" in remote_status else "active"
        running = int(remote_status.get(counted) or 0)
        replicas = tracked.request.replicas
        if running < replicas:
            return
        self._unschedulable_since.pop(tracked.key, None)
        status = tracked.status
        if status.phase is JobPhase.RUNNING:
            return
        now = self.clock()
        status.phase = JobPhase.RUNNING
        if status.start_time is None:
            started = remote_status.get("startTime")
            status.start_time = parse_timestamp(started) if started else whole_seconds(now)
        tracked.condition(
            JobConditionType.RUNNING,
            True,
            JobReason.PODS_RUNNING,
            f"all {replicas} replica(s) run on {tracked.dispatched_to}",
            now=now,
        )
        await self.writer.write(tracked)

    async def _finish(
        self, tracked: TrackedJob, remote_status: dict[str, Any], ended: dict[str, Any]
    ) -> None:
        succeeded = ended.get("type") == "Complete"
        moment = remote_status.get("completionTime") or ended.get("lastTransitionTime")
        end = parse_timestamp(moment) if moment else whole_seconds(self.clock())
        started = remote_status.get("startTime")
        start = parse_timestamp(started) if started else whole_seconds(end)
        reason = JobReason.SUCCEEDED if succeeded else JobReason.FAILED
        if not succeeded and ended.get("reason") == "DeadlineExceeded":
            reason = JobReason.DEADLINE_EXCEEDED
        cost = self._close_attempt(tracked, start, end, reason, "")
        why = ""
        if not succeeded:
            why = await self._failures(tracked)
        message = (
            f"{'Succeeded' if succeeded else 'Failed'} on {tracked.dispatched_to}: {why}"
            f"{cost.gpu_seconds} GPU-seconds at {format_money(cost.price_per_gpu_hour)}/GPU-hour, "
            f"charged {format_money(cost.charge)}"
        )
        await self.close(tracked, succeeded, reason, message, end=end, start=start)

    async def _failures(self, tracked: TrackedJob) -> str:
        """Why the job's pods failed, read from its member into the status; the sentence for
        the Event ("" when the member does not say: the job still closes)."""
        cluster = tracked.dispatched_to or ""
        link = self.members.link(cluster)
        ref = tracked.status.remote_ref
        if link is None or ref is None:
            return ""
        try:
            pods = await link.list_pods(ref.namespace, f"{JOB_UID_LABEL}={tracked.key}")
        except Exception as error:
            logger.warning("reading why %s failed on %s: %s", tracked.request.name, cluster, error)
            return ""
        failures = pod_failures(pods, cluster)
        tracked.status.failures = failures
        if not failures:
            return ""
        more = len(failures) - 1
        also = f" (and {more} more failed pod(s), see status.failures)" if more else ""
        return f"{describe_failure(failures[0])}{also}; "

    def _close_attempt(
        self, tracked: TrackedJob, start: datetime, end: datetime, reason: str, message: str
    ) -> AttemptCost:
        """End the current attempt in status with its GPU time and cost."""
        attempt = tracked.status.last_attempt
        gpus = tracked.request.total_gpus
        cost = self.billing.attempt_cost(tracked.status, attempt, start=start, end=end, gpus=gpus)
        if attempt is not None:
            # The start the charge is computed from is the attempt's start on record: its
            # usage record is made from these very facts, so status and record agree.
            attempt.start_time = start
            attempt.end_time = end
            attempt.reason = str(reason)
            attempt.gpu_seconds = cost.gpu_seconds
            attempt.charge = cost.charge
            if message:
                attempt.message = message[:ATTEMPT_MESSAGE_MAX]
        return cost

    # --- the end of a job -----------------------------------------------------------------------

    async def close(
        self,
        tracked: TrackedJob,
        succeeded: bool,
        reason: str,
        message: str,
        *,
        end: datetime,
        start: datetime | None = None,
    ) -> None:
        """The job is over: charge every attempt's use once, release the rest, say so; tried
        until it lands (see the module notes). Only then is the job forgotten."""
        tracked.ended = True
        self._unschedulable_since.pop(tracked.key, None)
        failing: str | None = None
        for tries in itertools.count():
            if not self.book.current(tracked):
                return  # deleted meanwhile: its finalizer charges it
            try:
                text = await self._settle_and_record(
                    tracked, succeeded, reason, message, end=end, start=start
                )
                break
            except NotFoundError:
                # Gone without its finalizer (removed by hand): nothing left to write to.
                self.book.drop(tracked.key)
                return
            except Exception as error:
                metrics.BACKGROUND_TASK_ERRORS.labels("job-close").inc()
                delay = delay_after(tries + 1)
                described = f"{type(error).__name__}: {error}"
                if described != failing:  # once per cause, not at every try
                    logger.warning(
                        "closing job %s failed (%s); tried again in %.0fs, and until it lands",
                        tracked.request.name,
                        described,
                        delay,
                    )
                    failing = described
                await self.sleep(delay)
        if not succeeded:
            # A success is in the Finished condition and the usage record; a failure also
            # warns in an Event, which alerting and `kubectl get events` pick up.
            await self.events.event(
                tracked.identity.reference(), reason=reason, message=text, warning=True
            )
        if self.recorded is not None:
            self.spawn(self.recorded(tracked))
        self.book.retire(tracked)
        self.dispatching.withdraw(tracked.key)
        self.dispatching.kick()

    async def _settle_and_record(
        self,
        tracked: TrackedJob,
        succeeded: bool,
        reason: str,
        message: str,
        *,
        end: datetime,
        start: datetime | None,
    ) -> str:
        """Usage records first, then the job's status says it ended (with the charge and a zero
        reservation, in one write), then the voucher's ledger charges and closes; returns the
        message. Once the status says the job ended no attempt can start again, so a crash
        after it leaves only the ledger to finish, which the retry or the recount does."""
        gpus = tracked.request.total_gpus
        charge = await self.billing.record(tracked.identity, tracked.status, gpus=gpus)
        status = tracked.status
        status.phase = JobPhase.SUCCEEDED if succeeded else JobPhase.FAILED
        status.gpu_seconds = charge.gpu_seconds
        status.charged_cost = charge.amount
        status.reservation = Decimal(0)
        status.completion_time = whole_seconds(end)
        if start is not None and status.start_time is None:
            status.start_time = whole_seconds(start)
        text = (
            f"{message}; in all {format_money(charge.amount)} over {len(status.attempts)} "
            "attempt(s), and the rest of the reservation is released."
        )
        now = self.clock()
        tracked.condition(JobConditionType.RUNNING, False, reason, text, now=now)
        tracked.condition(JobConditionType.FINISHED, True, reason, text, now=now)
        tracked.condition(
            JobConditionType.RESERVED,
            False,
            JobReason.RESERVATION_RELEASED,
            "The reservation was settled.",
            now=now,
        )
        tracked.condition(JobConditionType.CHARGED, True, JobReason.CHARGE_RECORDED, text, now=now)
        await self.writer.write(tracked)
        await self.billing.settle(tracked.identity, tracked.status, gpus=gpus, close=True)
        return text

    async def end_attempt(
        self,
        tracked: TrackedJob,
        reason: JobReason,
        message: str,
        *,
        end: datetime,
        charge_time: bool,
    ) -> None:
        """The job leaves its member (lost, or stuck unschedulable): charge, then place again."""
        cluster = tracked.dispatched_to or ""
        status = tracked.status
        attempt = status.last_attempt
        started = attempt.start_time if attempt and attempt.start_time else whole_seconds(end)
        self._close_attempt(tracked, started, end if charge_time else started, reason, message)
        self.book.mark_stale(tracked.key, cluster)
        self.index.forget(tracked.key)
        self._unschedulable_since.pop(tracked.key, None)
        if len(status.attempts) >= self.max_attempts:
            tracked.ended = True  # at once: nothing may place or follow it meanwhile
            self.spawn(
                self.close(
                    tracked,
                    False,
                    reason,
                    f"Failed: gave up after {len(status.attempts)} attempts; the last ended "
                    f"because {message}",
                    end=end,
                )
            )
            return
        if reason is JobReason.WITHDRAWN_UNSCHEDULABLE:
            # Our view said it fits there and the member's scheduler disagrees: until the two
            # agree, the job goes elsewhere.
            tracked.request = excluding(tracked.request, cluster, self.members.names())
        status.phase = JobPhase.QUEUED
        status.cluster = None
        status.remote_ref = None
        text = f"{message}; the job is placed again (attempt {(len(status.attempts) or 1) + 1})."
        now = self.clock()
        tracked.condition(JobConditionType.RUNNING, False, reason, text, now=now)
        tracked.condition(JobConditionType.DISPATCHED, False, reason, text, now=now)
        # Queued before the write: should the write fail, the placement's write carries it.
        self.dispatching.requeue(tracked.request)
        self.dispatching.kick()
        await self.writer.write(tracked)
        # The ended attempt is recorded and charged now; should that fail, the job's close (or
        # its finalizer) records every ended attempt again and the recount charges what the
        # ledger missed, so one try is enough here.
        self.spawn(self._charge_attempts(tracked))
        await self.events.event(
            tracked.identity.reference(), reason=reason, message=text, warning=True
        )

    def give_up(self, tracked: TrackedJob, reason: str, message: str) -> None:
        """The job will not run (it waited too long, or no member would take it): close it as
        failed now, charging what its attempts used and releasing the rest of its hold."""
        tracked.ended = True  # at once: nothing may place or follow it meanwhile
        self.index.forget(tracked.key)
        self.dispatching.withdraw(tracked.key)
        self.spawn(self.close(tracked, False, reason, f"Failed: {message}", end=self.clock()))

    async def _charge_attempts(self, tracked: TrackedJob) -> None:
        try:
            await self.billing.settle(
                tracked.identity, tracked.status, gpus=tracked.request.total_gpus, close=False
            )
        except Exception as error:
            metrics.BACKGROUND_TASK_ERRORS.labels("attempt-charge").inc()
            logger.warning("charging %s's ended attempt failed: %s", tracked.request.name, error)

    async def charge_deleted(self, tracked: TrackedJob, end: datetime) -> None:
        """The job was deleted: its running attempt ends at ``end`` (when its pods were gone,
        as workload sync saw it), charged from the start the hub recorded, and every attempt
        is charged and the hold closed."""
        attempt = tracked.status.last_attempt
        # An attempt that ended already (the job was closing) is charged as it ended.
        if attempt is not None and not attempt.ended and attempt.start_time is not None:
            self._close_attempt(
                tracked,
                attempt.start_time,
                max(attempt.start_time, whole_seconds(end)),
                JobReason.DELETED,
                "deleted",
            )
        await self.billing.settle(
            tracked.identity, tracked.status, gpus=tracked.request.total_gpus, close=True
        )

    # --- members that fail their jobs -----------------------------------------------------------

    def pod_unschedulable(self, job: str) -> None:
        self._unschedulable_since.setdefault(job, self.monotonic())

    def forget(self, uid: str) -> None:
        self._unschedulable_since.pop(uid, None)

    async def withdraw_stuck(self) -> None:
        """Move the jobs whose pods stayed unschedulable on their member for longer than
        ``unschedulable_seconds``. One job's failure (its member does not answer the delete)
        does not hold up the others; the first is raised once all were tried."""
        limit = self.unschedulable_seconds
        now = self.monotonic()
        errors: list[Exception] = []
        for uid, since in list(self._unschedulable_since.items()):
            tracked = self.book.get(uid)
            if tracked is None or not tracked.live_on_member:
                self._unschedulable_since.pop(uid, None)
                continue
            if now - since < limit:
                continue
            try:
                await self._withdraw(tracked, limit)
            except Exception as error:
                errors.append(error)
        if errors:
            raise errors[0]

    async def _withdraw(self, tracked: TrackedJob, limit: float) -> None:
        cluster = tracked.dispatched_to or ""
        if self.remove_remote is not None:
            # Raises while the member does not answer: the watchdog tries again next time.
            await self.remove_remote(tracked)
        await self.end_attempt(
            tracked,
            JobReason.WITHDRAWN_UNSCHEDULABLE,
            f"its pods stayed unschedulable on {cluster} for {limit:.0f}s",
            end=self.clock(),
            charge_time=False,
        )

    async def member_lost(self, cluster: str, since: datetime) -> None:
        """``cluster`` stopped answering at ``since``, longer ago than the grace period: each
        of its jobs is charged for the time it ran there and placed again."""
        stranded = self.book.live_on(cluster)
        logger.info("member %s is lost: moving its %d job(s)", cluster, len(stranded))
        for tracked in stranded:
            try:
                await self.end_attempt(
                    tracked,
                    JobReason.MEMBER_LOST,
                    f"member {cluster} stopped answering at {format_timestamp(since)}",
                    end=since,
                    charge_time=True,
                )
            except Exception:  # one job's failed write must not strand the others
                logger.exception("moving job %s off member %s failed", tracked.key, cluster)


def excluding(request: JobRequest, cluster: str, members: frozenset[str]) -> JobRequest:
    """``request`` with ``cluster`` taken out of the clusters it may run on; with nowhere else
    to go, it stays where it may run."""
    return request.without(cluster, members) or request
