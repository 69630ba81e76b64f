"""Placement: the pending queue, the dispatch pass, and recording where each job goes.

One loop drains the :class:`~suanli.dispatch.queue.PendingQueue` against the capacity index
whenever something may have freed capacity or queued a job (:meth:`Placement.kick`), at most
once per ``PASS_INTERVAL_SECONDS`` so the kicks of a burst make one pass. The decisions are
the pure dispatch code's; every placement is assumed in the index before anything is awaited,
so concurrent decisions never over-place.

A placed job's choice is recorded in its status first (phase Dispatched, the cluster, the
remote reference, a new attempt at the member's price), and only then is the remote Job made
(``launch``, which is workload sync's): a crash in between is repaired on restart by creating
it again, never by choosing again. A job that waits has its status say why, once per reason.

The writes of a pass are handed to a bounded pool shared by every pass, so a pass ends at once
and the next can place the jobs admitted meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from suanli import metrics
from suanli.api.computejob import ComputeJob, JobPhase
from suanli.api.reasons import JobConditionType, JobReason
from suanli.controller.jobs import JobBook
from suanli.controller.ports import Clock, EventRecorder, Link, Members, Sleep, Spawn
from suanli.controller.status import (
    AttemptRecord,
    RemoteRef,
    StatusWriter,
    TrackedJob,
    whole_seconds,
)
from suanli.dispatch.capacity import CapacityIndex
from suanli.dispatch.models import JobRequest
from suanli.dispatch.queue import PendingQueue, Placed
from suanli.members.workload import remote_name, remote_namespace

logger = logging.getLogger(__name__)

DISPATCH_CONCURRENCY: Final = 32
"""Placed (or newly waiting) jobs whose writes are in flight at once, across passes."""
PASS_INTERVAL_SECONDS: Final = 0.2
"""The least time between two dispatch passes: the kicks of a burst make one pass, not many."""
UNWRITTEN_GRACE_SECONDS: Final = 1.0
"""How long a new job's admission record may wait to go out with its first dispatch write."""

Launch = Callable[[TrackedJob, Link, ComputeJob], Awaitable[None]]
"""Create the placed job's remote Job on its member (workload sync)."""


@dataclass
class Placement:
    book: JobBook
    index: CapacityIndex
    members: Members
    writer: StatusWriter
    events: EventRecorder
    launch: Launch
    spawn: Spawn
    clock: Clock
    sleep: Sleep = asyncio.sleep
    queue: PendingQueue = field(default_factory=PendingQueue)
    _kick: asyncio.Event = field(default_factory=asyncio.Event)
    _passed: bool = False
    # Why each queued job waits, as its status says it (job uid -> summary), and what it is to
    # say once a write slot is free; jobs (uid) with such a write on the way.
    _waiting_reasons: dict[str, str] = field(default_factory=dict)
    _waiting_due: dict[str, tuple[str, str]] = field(default_factory=dict)
    _marking: set[str] = field(default_factory=set)
    # Since when each job has waited to be placed (cleared once a placement is recorded).
    _queued_since: dict[str, datetime] = field(default_factory=dict)
    # Shared by every pass: a pass hands its writes over and ends, so the next pass can place
    # the jobs admitted meanwhile instead of waiting for the slowest write of this one.
    _write_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(DISPATCH_CONCURRENCY)
    )

    # --- what the other parts ask (ports.Dispatching) -------------------------------------------

    def kick(self) -> None:
        """Something may have freed capacity or queued a job: drain the queue soon."""
        self._kick.set()

    def requeue(self, request: JobRequest) -> None:
        """Place the job again on a later pass (the caller kicks if it should be soon)."""
        self._queued_since.setdefault(request.key, self.clock())
        self.queue.push(request)

    def withdraw(self, key: str) -> None:
        """The job is deleted: out of the queue, and nothing more said about its wait."""
        self.queue.remove(key)
        self.forget_waiting(key)
        self._queued_since.pop(key, None)

    def overdue(self, limit_seconds: float) -> list[tuple[str, str]]:
        """The jobs (uid) that have waited to be placed for longer than ``limit_seconds``,
        each with why it waits, as its status last said."""
        now = self.clock()
        return [
            (key, self._waiting_reasons.get(key, "no member could run it"))
            for key, since in self._queued_since.items()
            if (now - since).total_seconds() > limit_seconds and key in self.queue
        ]

    def forget_waiting(self, key: str) -> None:
        self._waiting_reasons.pop(key, None)
        self._waiting_due.pop(key, None)

    # --- the pass -------------------------------------------------------------------------------

    async def next_pass(self) -> None:
        """Wait until a pass is due: kicked, and the least interval since the last one."""
        if self._passed:
            await self.sleep(PASS_INTERVAL_SECONDS)
        self._passed = True
        await self._kick.wait()
        self._kick.clear()

    def tick(self) -> None:
        """Every second: a pass if jobs wait, whatever else happens. A job put back after a
        failed write, or capacity freed by an event that kicked nothing, is then placed
        within a second rather than at the next unrelated event."""
        if len(self.queue):
            self.kick()

    async def drain(self) -> None:
        if not len(self.queue) or not self.members.ready_to_place():
            return
        result = await self.queue.drain_async(self.index, held=self._held())
        # Every placement is assumed in the index already, so their writes may overlap, with
        # each other and with later passes. One at a time, dispatch was capped by the sum of a
        # job's round trips (status write, remote Job create); a pass that waited for all of
        # its writes held up every job admitted meanwhile behind its slowest write.
        for placed in result.placed:
            self.spawn(bounded(self._write_slots, self._dispatch(placed)))
        for key, decision in result.waiting.items():
            self._say_waiting(key, decision.reason, decision.summary)

    def _held(self) -> dict[str, int]:
        held: dict[str, int] = {}
        for tracked in self.book.jobs.values():
            if tracked.live_on_member:
                tenant = tracked.request.tenant
                held[tenant] = held.get(tenant, 0) + tracked.request.total_gpus
        return held

    # --- waiting --------------------------------------------------------------------------------

    def _say_waiting(self, key: str, reason: str, summary: str) -> None:
        """Have the job's status say why it waits, unless it says so already.

        At most one write of this per job waits for a slot, and it writes the latest reason
        when its turn comes: passes repeat every fraction of a second while writes can take
        seconds, and a task per pass and job piled up by the hundred thousand.
        """
        if self._waiting_reasons.get(key) == summary:
            self._waiting_due.pop(key, None)  # a newer pass says what the status says
            return
        self._waiting_due[key] = (reason, summary)
        if key not in self._marking:
            self._marking.add(key)
            self.spawn(bounded(self._write_slots, self._mark_waiting(key)))

    async def _mark_waiting(self, key: str) -> None:
        try:
            due = self._waiting_due.pop(key, None)
            tracked = self.book.get(key)
            if due is None or tracked is None or key not in self.queue:
                return  # said already, gone, or placed while this waited for a write slot
            reason, summary = due
            self._waiting_reasons[key] = summary
            tracked.status.phase = JobPhase.QUEUED
            tracked.condition(JobConditionType.DISPATCHED, False, reason, summary, now=self.clock())
            try:
                await self.writer.write(tracked)
            except Exception:
                self._waiting_reasons.pop(key, None)  # said again on the next pass
                raise
        finally:
            self._marking.discard(key)

    async def write_admission_soon(self, tracked: TrackedJob) -> None:
        """Write a new job's status if no dispatch write has carried it within the grace.

        A job placed meanwhile is left to its placement's write, which carries the record:
        under load its write slot can take longer than the grace, and writing the record alone
        then was one more status write per job on the busiest API server.
        """
        while True:
            await self.sleep(UNWRITTEN_GRACE_SECONDS)
            if tracked.written or not self.book.current(tracked):
                return
            if tracked.key in self.queue:  # not placed: nothing else will write it soon
                await self.writer.write(tracked)
                return

    # --- recording a placement ------------------------------------------------------------------

    async def _dispatch(self, placed: Placed) -> None:
        key = placed.job.key
        tracked = self.book.get(key)
        choice = placed.decision.choice
        if tracked is None or choice is None:
            self.index.forget(key)
            return
        member = self.members.member(choice.cluster)
        link = self.members.link(choice.cluster)
        if member is None or link is None:
            self.index.forget(key)
            self.queue.push(tracked.request)
            return
        self.forget_waiting(key)  # should it wait again, that is news again
        job = tracked.model()
        now = self.clock()
        before = tracked.status
        status = tracked.status = before.copy()
        status.attempts.append(
            AttemptRecord(
                cluster=choice.cluster,
                # Where it ran, as the member said when it was chosen: the usage record
                # carries these facts even if the member is gone by the time it is charged.
                provider=member.spec.provider,
                region=member.spec.region,
                gpu_model=choice.model,
                price_per_gpu_hour=choice.price_per_gpu_hour,
                start_time=whole_seconds(now),
            )
        )
        status.phase = JobPhase.DISPATCHED
        status.cluster = choice.cluster
        status.remote_ref = RemoteRef(namespace=remote_namespace(job), name=remote_name(job))
        summary = placed.decision.summary
        tracked.condition(JobConditionType.DISPATCHED, True, JobReason.PLACED, summary, now=now)
        # The choice is recorded before the remote Job exists: a crash between the two is
        # repaired on restart by creating it (idempotently), never by choosing again.
        try:
            await self.writer.write(tracked)
        except Exception as error:
            # Nothing was recorded, so nothing runs: undo the choice and place it again on a
            # later pass (not at once, which would spin while the hub does not answer).
            logger.warning("recording where %s goes failed: %s", tracked.request.name, error)
            tracked.status = before
            self.index.forget(key)
            if self.book.current(tracked):
                self.queue.push(tracked.request)
            return
        self._queued_since.pop(key, None)
        created = tracked.identity.created
        if created is not None and len(status.attempts) == 1:
            metrics.DISPATCH_SECONDS.observe(max(0.0, (now - created).total_seconds()))
        if not self.book.current(tracked):
            return  # deleted meanwhile: its finalizer has run, so nothing may start it now
        identity = tracked.identity
        logger.info("dispatching %s/%s: %s", identity.namespace, identity.name, summary)
        if len(status.attempts) > 1:
            # A move is history the Dispatched condition (which says where the job is now)
            # overwrites: an Event keeps it. A first placement is in the condition alone, an
            # Event per job fewer to write.
            await self.events.event(identity.reference(), reason=JobReason.PLACED, message=summary)
        await self.launch(tracked, link, job)


async def bounded(slots: asyncio.Semaphore, coroutine: Coroutine[Any, Any, None]) -> None:
    """Await ``coroutine`` once one of ``slots`` is free; a failure is logged, not raised."""
    async with slots:
        try:
            await coroutine
        except Exception:
            logger.exception("dispatching a job failed")
