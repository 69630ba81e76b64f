"""The dispatcher: the controller's parts, wired together, as the Kopf handlers see them.

It builds the fleet, placement, workload sync and follow-up around one capacity index and
one book of jobs, hands each the narrow interfaces it needs (the hub as a status writer, an
event recorder and a Secret reader; the billing; a clock, a sleep and a spawner), relays what
one part reports to another (the fleet's job reports to workload sync, lost members and
unschedulable pods to follow-up), and runs the background loops, each of which survives its
errors (:mod:`.loops`). The handlers call :meth:`job_seen`, :meth:`job_deleted`,
:meth:`member_upsert`, :meth:`member_delete`, :meth:`knows` and :meth:`connection_problem`.

Everything here runs on the operator's event loop; MemberLink callbacks arrive on it too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

from suanli import metrics
from suanli.api.common import format_duration
from suanli.api.computejob import ComputeJob, JobPhase
from suanli.api.membercluster import MemberCluster
from suanli.api.reasons import JobReason, MemberReason
from suanli.api.voucherquota import VoucherQuota
from suanli.controller.charging import Billing
from suanli.controller.fleet import MemberFleet, member_link
from suanli.controller.followup import FollowUp
from suanli.controller.jobs import JobBook
from suanli.controller.orphans import OrphanSweep
from suanli.controller.placement import Placement
from suanli.controller.ports import Clock, Hub, Link, LinkFactory, Obj, Sleep, Spawn
from suanli.controller.status import JobStatus, StatusWriter, TrackedJob, whole_seconds
from suanli.controller.tenant_data import TenantData
from suanli.controller.workload_sync import WorkloadSync
from suanli.dispatch.capacity import CapacityIndex
from suanli.dispatch.models import JobRequest
from suanli.kits.loops import run_forever
from suanli.options import OperatorOptions
from suanli.vouchers.pricing import Installed

logger = logging.getLogger(__name__)

METRICS_INTERVAL_SECONDS: Final = 1.0
WATCHDOG_INTERVAL_SECONDS: Final = 1.0

VoucherTerms = Callable[[str, str], VoucherQuota | None]
"""The voucher a job is held against, by (namespace, name), as last seen; None if unknown."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    """Admitted ComputeJobs to member clusters, followed to the end, charged once."""

    def __init__(
        self,
        *,
        options: OperatorOptions,
        hub: Hub,
        billing: Billing,
        vouchers: VoucherTerms,
        spawn: Spawn,
        clock: Clock = utc_now,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        link_factory: LinkFactory = member_link,
    ) -> None:
        self.options = options
        self._vouchers = vouchers
        self._spawn = spawn
        self._sleep = sleep
        self.clock = clock
        self.index = CapacityIndex()
        self.book = JobBook()
        # Status writes are made by placement, workload sync and follow-up alike; the write
        # lock that orders them is each job's own (TrackedJob.write_lock).
        writer = StatusWriter(hub)
        self.fleet = MemberFleet(
            index=self.index,
            secrets=hub,
            events=hub,
            options=options,
            listener=self,
            spawn=spawn,
            clock=clock,
            sleep=sleep,
            link_factory=link_factory,
        )
        self.placement = Placement(
            book=self.book,
            index=self.index,
            members=self.fleet,
            writer=writer,
            events=hub,
            launch=self._launch,
            spawn=spawn,
            clock=clock,
            sleep=sleep,
        )
        self.tenant_data = TenantData(hub=hub, book=self.book, members=self.fleet, events=hub)
        self.followup = FollowUp(
            book=self.book,
            index=self.index,
            members=self.fleet,
            writer=writer,
            events=hub,
            billing=billing,
            dispatching=self.placement,
            spawn=spawn,
            clock=clock,
            max_attempts=options.max_attempts,
            unschedulable_seconds=options.unschedulable_seconds,
            sleep=sleep,
            monotonic=monotonic,
        )
        self.sync = WorkloadSync(
            book=self.book,
            index=self.index,
            members=self.fleet,
            writer=writer,
            dispatching=self.placement,
            follow=self.followup.follow,
            spawn=spawn,
            clock=clock,
            tenant_data=self.tenant_data,
            remote_job_ttl=options.remote_job_ttl_seconds,
            max_grace=options.termination_grace_seconds,
            max_dispatch_failures=options.max_dispatch_failures,
            sleep=sleep,
            give_up=self.followup.give_up,
            end_attempt=self._end_attempt_now,
        )
        self.followup.recorded = self.sync.finished
        self.followup.remove_remote = self.sync.withdraw_remote
        self.orphans = OrphanSweep(
            hub=hub,
            book=self.book,
            members=self.fleet,
            remove_job=self.sync.remove,
            grace=options.termination_grace_seconds,
        )
        # Jobs (uid) deleted whose charge failed: the finalizer's retry takes them up again
        # as they were (their last attempt closed), not as the stored job says.
        self._deleting: dict[str, TrackedJob] = {}
        self._loops: list[asyncio.Task[None]] = []

    # --- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        def every(seconds: float) -> Callable[[], Awaitable[None]]:
            return lambda: self._sleep(seconds)

        async def notice_refused() -> None:
            self.fleet.notice_refused_credentials()

        async def tick() -> None:
            self.placement.tick()

        async def publish() -> None:
            self.publish_metrics()

        loops: dict[str, tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[None]]]] = {
            "dispatch": (self.placement.next_pass, self.placement.drain),
            "pass-a-second": (every(WATCHDOG_INTERVAL_SECONDS), tick),
            "watchdog": (every(WATCHDOG_INTERVAL_SECONDS), self.followup.withdraw_stuck),
            "refused-credentials": (every(WATCHDOG_INTERVAL_SECONDS), notice_refused),
            "metrics": (every(METRICS_INTERVAL_SECONDS), publish),
            "tenant-data-sync": (
                every(self.options.tenant_data_sync_seconds),
                self.tenant_data.resync,
            ),
            "kubeconfig-check": (
                every(self.options.kubeconfig_check_seconds),
                self.fleet.check_kubeconfigs,
            ),
            "queue-timeout": (every(WATCHDOG_INTERVAL_SECONDS), self.expire_queued),
            "orphan-sweep": (every(self.options.orphan_sweep_seconds), self.orphans.sweep),
        }
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(run_forever(name, wait, step), name=f"controller {name}")
            for name, (wait, step) in loops.items()
        ]

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        self._loops.clear()
        await self.fleet.stop()

    def kick(self) -> None:
        self.placement.kick()

    async def expire_queued(self) -> None:
        """Fail the jobs that waited to be placed for longer than ``--queue-timeout``: their
        holds are released rather than parked for ever."""
        limit = self.options.queue_timeout_seconds
        for key, why in self.placement.overdue(limit):
            tracked = self.book.get(key)
            if tracked is None or tracked.ended or tracked.live_on_member:
                self.placement.withdraw(key)
                continue
            metrics.QUEUE_TIMEOUTS.inc()
            self.followup.give_up(
                tracked,
                JobReason.QUEUE_TIMEOUT,
                f"waited longer than {format_duration(int(limit))} for a member to run it "
                f"(the last reason it waited: {why}); submit it again when capacity allows",
            )

    def installed(self, cluster: str, model: str) -> Installed | None:
        """The devices of ``model`` on ``cluster``'s nodes, for admission to judge whether a
        gang could ever fit there; None while the member's nodes are not listed."""
        if not self.fleet.nodes_listed(cluster):
            return None
        capacity = self.index.capacity(cluster, model)
        return Installed(capacity.total_histogram if capacity is not None else ())

    def publish_metrics(self) -> None:
        phases: dict[str, int] = dict.fromkeys((p.value for p in JobPhase), 0)
        for tracked in self.book.jobs.values():
            phase = (tracked.status.phase or JobPhase.PENDING).value
            phases[phase] = phases.get(phase, 0) + 1
        for phase, count in phases.items():
            metrics.JOBS_BY_PHASE.labels(phase).set(count)
        metrics.QUEUE_DEPTH.set(len(self.placement.queue))
        oldest = self.placement.queue.oldest_submitted_at()
        waited = 0.0 if oldest is None else self.clock().timestamp() - oldest
        metrics.QUEUE_OLDEST_SECONDS.set(max(0.0, waited))

    # --- members (for the MemberCluster handlers) -----------------------------------------------

    @property
    def members(self) -> dict[str, MemberCluster]:
        return self.fleet.members

    @property
    def reachable(self) -> dict[str, bool]:
        return self.fleet.reachable

    async def member_upsert(self, body: dict[str, Any]) -> None:
        await self.fleet.member_upsert(body)

    async def member_delete(self, name: str) -> None:
        await self.fleet.member_delete(name)

    async def member_removed(self, name: str) -> None:
        """A MemberCluster is being deleted (its finalizer): each job running there ends its
        attempt now, charged for the time the hub recorded, and is placed again elsewhere; its
        copy is deleted while the member still answers (else once it does). Then the member
        leaves the federation. Raises when a job's status could not be written: call again."""
        now = self.clock()
        for tracked in self.book.live_on(name):
            await self.sync.delete_remote(tracked)
            await self.followup.end_attempt(
                tracked,
                JobReason.MEMBER_REMOVED,
                f"member {name} was removed from the federation",
                end=now,
                charge_time=True,
            )
        await self.fleet.member_delete(name)

    def connection_problem(self, name: str) -> tuple[MemberReason, str] | None:
        return self.fleet.connection_problem(name)

    # --- jobs (for the ComputeJob handlers) -----------------------------------------------------

    def knows(self, uid: str) -> bool:
        """Whether the job is followed, or was finished and charged, by this process."""
        return self.book.knows(uid)

    async def job_seen(self, job: ComputeJob, *, unwritten: bool = False) -> None:
        """A ComputeJob was admitted (or found at start-up): queue it, or keep following it.

        ``unwritten``: its status holds the admission record, not written yet.
        """
        status = job.status
        if status.charged_cost is not None and status.remote_ref is not None:
            # Recorded by an earlier life: should its remote Job still lack its TTL, it gets
            # it at its next report (workload sync).
            self.book.finished.add(job.metadata.uid or "")
        if status.phase is JobPhase.REJECTED or status.charged_cost is not None:
            return
        tracked = self._track(job, written=not unwritten)
        self.book.add(tracked)
        if unwritten:
            self._spawn(self.placement.write_admission_soon(tracked))
        if status.cluster and status.remote_ref is not None:
            await self.sync.reattach(tracked)
        else:
            self.placement.requeue(tracked.request)
            self.placement.kick()

    def _track(self, job: ComputeJob, *, written: bool = True) -> TrackedJob:
        """What the controller keeps of ``job``: its request, its status, identity and spec."""
        status = job.status
        voucher = self._vouchers(job.metadata.namespace or "", status.voucher or "")
        request = JobRequest.from_computejob(job, voucher, key=job.metadata.uid or "")
        return TrackedJob.of(job, request, JobStatus.from_model(status), written=written)

    async def job_deleted(self, job: ComputeJob) -> None:
        """The finalizer: stop the remote Job and charge what every attempt used.

        The remote workload is removed first (waiting, under the job's lock, for a launch in
        flight), and the running attempt ends when the member reports the pods gone, at most
        the job's grace after the deletion: the tenant pays for what its pods held, and no
        more. A member that does not answer has its copy removed once it does, and the attempt
        ends at the deletion. Raises when the charge could not be made; the finalizer calls
        again until it is."""
        uid = job.metadata.uid or ""
        self.placement.withdraw(uid)
        self.index.forget(uid)
        self.followup.forget(uid)
        tracked = self.book.drop(uid) or self._deleting.pop(uid, None)
        if tracked is None:
            if job.status.charged_cost is not None or not job.status.cluster:
                self.kick()
                return  # finished and charged, or never placed: nothing runs for it
            # Placed by an earlier life of the operator and deleted before this one resumed it.
            tracked = self._track(job)
        if tracked.deleted_at is None:
            tracked.deleted_at = whole_seconds(self.clock())
        try:
            attempt = tracked.status.last_attempt
            end = tracked.deleted_at
            if attempt is not None and not attempt.ended:
                end = await self.sync.stop_deleted(tracked, tracked.deleted_at)
            else:
                await self.sync.delete_remote(tracked)
            await self.followup.charge_deleted(tracked, end)
        except Exception:
            self._deleting[uid] = tracked
            raise
        self.kick()

    # --- relays between the parts ----------------------------------------------------------------

    async def _launch(self, tracked: TrackedJob, link: Link, job: ComputeJob) -> None:
        await self.sync.create_remote(tracked, link, job)

    async def _end_attempt_now(self, tracked: TrackedJob, reason: JobReason, message: str) -> None:
        await self.followup.end_attempt(
            tracked, reason, message, end=self.clock(), charge_time=True
        )

    def nodes_synced(self, cluster: str) -> None:
        self.sync.nodes_synced(cluster)

    def jobs_synced(self, cluster: str, remotes: list[Obj]) -> None:
        self.sync.jobs_synced(cluster, remotes)

    def job_event(self, cluster: str, kind: str, remote: Obj) -> None:
        self.sync.job_event(cluster, kind, remote)

    def pod_unschedulable(self, job: str) -> None:
        self.followup.pod_unschedulable(job)

    async def member_lost(self, cluster: str, since: datetime) -> None:
        await self.followup.member_lost(cluster, since)
