"""Workload sync: each placed job's remote batch Job, made once, kept to one, removed for good.

The remote Job is made under a deterministic name in a namespace of the tenant's own on the
member (AlreadyExists is success), so making it again, after a crash or a restart, never
yields a second copy. After a restart a placed job is re-attached: its remote Job is looked
up, made if it is missing (its GPUs held in the index again first, so no other job takes
them), and followed. Each (re)list of a member's Jobs makes the missing ones again, and every
report of a Job goes to the follow-up of the job it belongs to (label ``suanli.io/job-uid``).

Making and removing one job's workload are serialised by the job's ``remote_lock``: a launch
holds it from its first await to its create, and checks again after every await that the job
is still followed, still placed there; a deletion takes it before it removes anything. So a
job deleted at any moment of its dispatch leaves nothing behind: either the launch sees the
deletion and stops, or the deletion waits for the create and removes what it made.

Removing a workload deletes the Job and its pods with an explicit grace (the job's bounded
grace, :mod:`suanli.api.termination`), then the job's copies. A remote Job reported for a job
the hub follows elsewhere (moved, or a create that timed out and still landed) is removed as
it is seen; one whose job the hub no longer has at all is the orphan sweep's
(:mod:`.orphans`).

A create that fails uses no attempt: the attempt recorded for it is dropped (it never ran) and
the job is placed again after a back-off. A member that refuses the workload (it answered
4xx) is left out for that job, as one whose scheduler refuses its pods is; after
``max_dispatch_failures`` failed creates, or with no member left that could ever take it
(:func:`~suanli.dispatch.policy.never_placed`), the job fails with the reason and its hold is
released. A job placed on a model whose nodes the member has not
listed yet (just after a restart) waits for them: a remote Job is never made without the
affinity that pins it to the chosen model.

Around the remote Job: the tenant's Secrets and ConfigMaps are copied first (:mod:`.tenant_data`),
so its pods find them; a gang's headless Service follows the Job (it is owned by it), and is
made again at the Job's next report should that fail. Once the hub has recorded how a job
ended (its status and usage records written), :meth:`WorkloadSync.finished` deletes the copies
and gives the remote Job a TTL (``ttlSecondsAfterFinished``), after which the member removes it
with its pods and Service. Only then: a Job that vanished before its outcome was recorded would
be taken for one never made, and made again. A finished job whose TTL could not be set gets it
at its Job's next report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from suanli import metrics
from suanli.api.catalogue import member_catalogue
from suanli.api.computejob import ComputeJob, JobPhase
from suanli.api.names import JOB_UID_LABEL
from suanli.api.reasons import JobConditionType, JobReason
from suanli.api.termination import pod_lifetime
from suanli.controller.jobs import JobBook
from suanli.controller.ports import Clock, Dispatching, Link, Members, Obj, Sleep, Spawn
from suanli.controller.status import StatusWriter, TrackedJob, whole_seconds
from suanli.controller.tenant_data import TenantData
from suanli.dispatch.capacity import CapacityIndex, OverPlacementError
from suanli.dispatch.policy import never_placed
from suanli.kits.retry import delay_after
from suanli.members.link import MemberLinkError
from suanli.members.workload import gang_service, remote_job, remote_namespace_object

logger = logging.getLogger(__name__)

POD_GONE_POLL_SECONDS: Final = 1.0
"""How often a deletion asks the member whether the job's pods are gone."""

Follow = Callable[[TrackedJob, Obj], Coroutine[Any, Any, None]]
"""Mirror a remote Job's state into its job (follow-up)."""
GiveUp = Callable[[TrackedJob, str, str], None]
"""Close a job that will not run: (job, reason, message); its hold is released (follow-up)."""
EndAttempt = Callable[[TrackedJob, JobReason, str], Awaitable[None]]
"""End a job's attempt that ran, charged to now, and place it again (follow-up)."""


class CreateFailure(StrEnum):
    """Why a remote create failed, as it decides what happens next."""

    REFUSED = "refused"
    """The member answered 4xx: it will refuse again; the job goes elsewhere."""
    TENANT_DATA = "tenant-data"
    """A referenced Secret or ConfigMap is missing or may not be copied: the tenant's to fix."""
    TRANSIENT = "transient"
    """No answer, or a 5xx or 429: it may work later, there or elsewhere."""


def failure_of(error: BaseException) -> CreateFailure:
    if isinstance(error, LookupError):
        return CreateFailure.TENANT_DATA
    status = error.status if isinstance(error, MemberLinkError) else None
    if status is not None and 400 <= status < 500 and status not in (404, 408, 409, 429):
        return CreateFailure.REFUSED
    return CreateFailure.TRANSIENT


def pods_hold_devices(pods: list[Obj]) -> bool:
    """Whether any of ``pods`` may still hold its devices: it exists and has not finished."""
    return any(
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed") for pod in pods
    )


@dataclass
class WorkloadSync:
    book: JobBook
    index: CapacityIndex
    members: Members
    writer: StatusWriter
    dispatching: Dispatching
    follow: Follow
    spawn: Spawn
    clock: Clock
    tenant_data: TenantData
    remote_job_ttl: int
    """Seconds a finished remote Job stays on its member after the hub recorded its outcome."""
    max_grace: int
    """The platform's bound on a pod's termination grace, in seconds."""
    max_dispatch_failures: int
    """Failed remote creates after which a job fails for good."""
    sleep: Sleep = asyncio.sleep
    give_up: GiveUp | None = None
    end_attempt: EndAttempt | None = None
    # Gangs (uid) whose headless Service this process made (or found made).
    _services: set[str] = field(default_factory=set)
    # Per member: jobs (uid) placed on a model whose nodes it has not listed yet.
    _awaiting_nodes: dict[str, set[str]] = field(default_factory=dict)

    # --- making the remote Job ------------------------------------------------------------------

    def _launchable(self, tracked: TrackedJob, cluster: str) -> bool:
        """Whether the job is still the one followed, not over, and placed on ``cluster``."""
        return self.book.current(tracked) and not tracked.ended and tracked.dispatched_to == cluster

    async def create_remote(
        self, tracked: TrackedJob, link: Link, job: ComputeJob | None = None
    ) -> None:
        """Create the job's remote Job; ``job``: its model, when the caller has built it."""
        cluster = tracked.dispatched_to or ""
        async with tracked.remote_lock:
            if not self._launchable(tracked, cluster):
                return  # deleted, ended or moved before its turn: nothing to make
            job = job or tracked.model()
            attempt = tracked.status.last_attempt
            model = attempt.gpu_model if attempt else None
            pin = self.members.pin(cluster, model)
            if model and pin is None and not self.members.nodes_listed(cluster):
                # Without the member's nodes there is no pin, and a Job without one could land
                # on another model's (pricier) GPUs: made once the nodes are listed.
                self._awaiting_nodes.setdefault(cluster, set()).add(tracked.key)
                return
            try:
                member = self.members.member(cluster)
                if member is None:
                    raise MemberLinkError(f"member {cluster} is gone")
                if model and pin is None:
                    raise MemberLinkError(f"{cluster} has no node of {model} any more")
                await link.ensure_namespace(
                    remote_namespace_object(job, member.spec.pod_security_level)
                )
                if not self._launchable(tracked, cluster):
                    return
                await self.tenant_data.copy(job, link)
                if not self._launchable(tracked, cluster):
                    return  # the deletion that waits for the lock removes the copies
                resource = member_catalogue(member).resource_of(
                    model, member.spec.gpu_resource_name
                )
                body = remote_job(job, resource, pin, max_grace=self.max_grace)
                created = await link.create_job(body)
            except Exception as error:
                await self._create_failed(tracked, cluster, error)
                return
            await self._ensure_service(tracked, link, job, created)

    def nodes_synced(self, cluster: str) -> None:
        """``cluster``'s Nodes were listed: make the remote Jobs that waited for them."""
        link = self.members.link(cluster)
        waiting = self._awaiting_nodes.pop(cluster, set())
        for uid in waiting:
            tracked = self.book.get(uid)
            if link is not None and tracked is not None and self._launchable(tracked, cluster):
                self.spawn(self.create_remote(tracked, link))

    async def _create_failed(self, tracked: TrackedJob, cluster: str, error: Exception) -> None:
        """A create failed: drop the attempt it was for (it never ran), leave out a member that
        refused, and place the job again after a back-off, or give it up (module notes)."""
        cause = failure_of(error)
        metrics.DISPATCH_FAILURES.labels(cluster, cause.value).inc()
        logger.warning(
            "creating the remote Job of %s failed (%s): %s", tracked.request.name, cause, error
        )
        # A create that was not answered may have landed all the same: the member reports its
        # Job, which is removed then, as the job is no longer placed there (job_event).
        self.index.forget(tracked.key)
        status = tracked.status
        attempt = status.last_attempt
        if status.phase is not JobPhase.DISPATCHED and attempt is not None and not attempt.ended:
            # It ran (its remote Job vanished, and cannot be made again): charged as it ran.
            if self.end_attempt is not None:
                await self.end_attempt(
                    tracked,
                    JobReason.REMOTE_CREATE_FAILED,
                    f"its workload on {cluster} vanished and could not be made again: {error}",
                )
            return
        if attempt is not None and not attempt.ended:
            status.attempts.pop()
        tracked.dispatch_failures += 1
        failures = tracked.dispatch_failures
        reason = (
            JobReason.REMOTE_REFUSED
            if cause is CreateFailure.REFUSED
            else JobReason.REMOTE_CREATE_FAILED
        )
        message = f"creating the workload on {cluster} failed: {error}"
        if cause is CreateFailure.REFUSED:
            remaining = tracked.request.without(cluster, self.members.names())
            if remaining is None or never_placed(remaining, self.index):
                self._give_up(
                    tracked, f"{message}; no other member may run it, so the job is not run"
                )
                return
            tracked.request = remaining
        if failures >= self.max_dispatch_failures:
            self._give_up(
                tracked,
                f"{message}; gave up after {failures} failed creates, so the job is not run",
            )
            return
        delay = delay_after(failures)
        status.cluster = None
        status.remote_ref = None
        status.phase = JobPhase.QUEUED
        tracked.condition(
            JobConditionType.DISPATCHED,
            False,
            reason,
            f"{message} (failure {failures} of at most {self.max_dispatch_failures}); placed "
            f"again in {delay:.0f}s",
            now=self.clock(),
        )
        await self.writer.write(tracked)
        self.spawn(self._requeue_after(tracked, delay))

    def _give_up(self, tracked: TrackedJob, message: str) -> None:
        status = tracked.status
        status.cluster = None
        status.remote_ref = None
        if self.give_up is not None:
            self.give_up(tracked, JobReason.DISPATCH_FAILED, message)

    async def _requeue_after(self, tracked: TrackedJob, delay: float) -> None:
        await self.sleep(delay)
        if self.book.current(tracked) and not tracked.ended and tracked.dispatched_to is None:
            self.dispatching.requeue(tracked.request)
            self.dispatching.kick()

    async def _ensure_service(
        self, tracked: TrackedJob, link: Link, job: ComputeJob, remote: Obj
    ) -> None:
        """Make the gang's headless Service, owned by its remote Job; a failure is retried at
        the Job's next report (the pods cannot find each other until it exists)."""
        uid = (remote.get("metadata") or {}).get("uid") or ""
        service = gang_service(job, uid) if uid else None
        if service is None or tracked.key in self._services:
            return
        try:
            await link.create_service(service)
        except Exception as error:
            metrics.BACKGROUND_TASK_ERRORS.labels("gang-service").inc()
            logger.warning("making %s's headless Service failed: %s", tracked.request.name, error)
            return
        self._services.add(tracked.key)

    # --- the end of a job -----------------------------------------------------------------------

    async def finished(self, tracked: TrackedJob) -> None:
        """The job's outcome is recorded: its copies go, its remote Job gets its TTL."""
        cluster = tracked.dispatched_to or ""
        ref = tracked.status.remote_ref
        self._services.discard(tracked.key)
        if ref is not None:
            await self._release(cluster, ref.namespace, ref.name, tracked.key)

    async def _release(self, cluster: str, namespace: str, name: str, uid: str) -> None:
        link = self.members.link(cluster)
        if link is None:
            return
        try:
            await self.tenant_data.remove(link, namespace, uid)
            await link.set_job_ttl(namespace, name, self.remote_job_ttl)
        except Exception as error:
            metrics.BACKGROUND_TASK_ERRORS.labels("remote-release").inc()
            logger.warning(
                "releasing the finished Job %s/%s on %s failed (%s); tried again at its next "
                "report",
                namespace,
                name,
                cluster,
                error,
            )

    async def reattach(self, tracked: TrackedJob) -> None:
        """After a restart: the job was placed; make sure its remote Job exists and follow it."""
        cluster = tracked.dispatched_to or ""
        link = self.members.link(cluster)
        ref = tracked.status.remote_ref
        if link is None or ref is None:
            return  # the member's link will report its jobs once connected (jobs_synced)
        remote = await link.get_job(ref.namespace, ref.name)
        if remote is not None:
            await self.follow(tracked, remote)
            return
        # Placed by an earlier life of the operator, its remote Job not yet created: hold its
        # GPUs in the index again until its pods show, so no other job takes them.
        attempt = tracked.status.last_attempt
        model = attempt.gpu_model if attempt else None
        request = tracked.request
        allocation = (
            self.index.allocate(cluster, model, request.replicas, request.gpus_per_replica)
            if model
            else None
        )
        if allocation:
            with contextlib.suppress(OverPlacementError, ValueError):
                self.index.assume(tracked.key, cluster, allocation)
        await self.create_remote(tracked, link)

    def grace_of(self, tracked: TrackedJob) -> int:
        """The bounded termination grace the job's pods were given (seconds)."""
        spec = tracked.model().spec
        return pod_lifetime(
            int(spec.max_runtime.total_seconds()), spec.template, self.max_grace
        ).grace

    async def withdraw_remote(self, tracked: TrackedJob, grace: int | None = None) -> bool:
        """Delete the job's remote Job, its pods (given ``grace``, the job's own by default) and
        its copies, if it has any; whether there was one to delete. Raises when the member
        does not answer."""
        async with tracked.remote_lock:
            cluster = tracked.dispatched_to
            ref = tracked.status.remote_ref
            link = self.members.link(cluster or "")
            if not cluster or ref is None or link is None:
                return False
            self._services.discard(tracked.key)
            grace = self.grace_of(tracked) if grace is None else grace
            await self.remove(link, ref.namespace, ref.name, tracked.key, grace)
            return True

    async def delete_remote(self, tracked: TrackedJob, grace: int | None = None) -> bool:
        """:meth:`withdraw_remote`, for a job that is gone or leaves its member: a member that
        does not answer gets the copy deleted when it answers again (a stale copy), so this
        never waits on it. Whether the member answered."""
        try:
            return await self.withdraw_remote(tracked, grace)
        except Exception as error:
            cluster = tracked.dispatched_to or ""
            logger.warning(
                "deleting %s's copy on %s failed (%s); removed when the member answers",
                tracked.request.name,
                cluster,
                error,
            )
            self.book.mark_stale(tracked.key, cluster)
            return False

    async def remove(self, link: Link, namespace: str, name: str, uid: str, grace: int) -> None:
        """Delete a remote Job, its pods with at most ``grace`` seconds to stop, and its copies."""
        await link.delete_job(namespace, name)
        await link.delete_pods(namespace, f"{JOB_UID_LABEL}={uid}", grace)
        await self.tenant_data.remove(link, namespace, uid)

    async def stop_deleted(self, tracked: TrackedJob, deleted_at: datetime) -> datetime:
        """The job was deleted at ``deleted_at``: remove its workload and wait, at most its
        grace, for the member to report its pods gone. Returns when its attempt ends: when the
        pods were seen gone, never later than ``deleted_at`` plus the grace; ``deleted_at``
        itself when there was nothing to stop or the member did not answer."""
        cluster = tracked.dispatched_to or ""
        ref = tracked.status.remote_ref
        grace = self.grace_of(tracked)
        if not await self.delete_remote(tracked, grace) or ref is None:
            return deleted_at
        link = self.members.link(cluster)
        deadline = deleted_at + timedelta(seconds=grace)
        selector = f"{JOB_UID_LABEL}={tracked.key}"
        while link is not None:
            now = whole_seconds(self.clock())
            try:
                pods = await link.list_pods(ref.namespace, selector)
            except Exception as error:
                logger.warning(
                    "asking %s whether %s's pods are gone failed: %s",
                    cluster,
                    tracked.request.name,
                    error,
                )
                break
            if not pods_hold_devices(pods):
                return max(deleted_at, min(now, deadline))
            if now >= deadline:
                break
            await self.sleep(POD_GONE_POLL_SECONDS)
        return max(deleted_at, min(whole_seconds(self.clock()), deadline))

    # --- what the members report ----------------------------------------------------------------

    def jobs_synced(self, cluster: str, remotes: list[Obj]) -> None:
        self.dispatching.kick()  # this may have been the last watch placement waited for
        for remote in remotes:
            self.job_event(cluster, "ADDED", remote)
        # Jobs placed on this member whose remote Job is missing: create it (after restart).
        link = self.members.link(cluster)
        if link is None:
            return
        present = {r["metadata"]["labels"].get(JOB_UID_LABEL) for r in remotes}
        for tracked in self.book.live_on(cluster):
            if tracked.key not in present:
                self.spawn(self.create_remote(tracked, link))

    def job_event(self, cluster: str, kind: str, remote: Obj) -> None:
        uid = (remote.get("metadata", {}).get("labels") or {}).get(JOB_UID_LABEL) or ""
        if kind == "DELETED":
            return
        tracked = self.book.get(uid)
        placed_here = tracked is not None and not tracked.ended and tracked.dispatched_to == cluster
        if placed_here:
            # Placed back where it once ran: the Job of that name is this placement's own.
            self.book.stale_removed(uid, cluster)
        elif self.book.is_stale(uid, cluster) or (tracked is not None and not tracked.ended):
            # A copy the job left behind when it moved, or a create that seemed to fail and
            # landed: the job is followed elsewhere (or waits), so this one must not run.
            self.spawn(self._remove_stale_copy(uid, cluster, remote))
            return
        if tracked is None:
            if uid in self.book.finished and _lacks_ttl(remote):
                metadata = remote["metadata"]
                self.spawn(self._release(cluster, metadata["namespace"], metadata["name"], uid))
            return
        if tracked.dispatched_to != cluster:
            return
        link = self.members.link(cluster)
        gang = tracked.request.replicas > 1
        if link is not None and gang and not tracked.ended and uid not in self._services:
            self.spawn(self._ensure_service(tracked, link, tracked.model(), remote))
        self.spawn(self.follow(tracked, remote))

    async def _remove_stale_copy(self, uid: str, cluster: str, remote: Obj) -> None:
        link = self.members.link(cluster)
        if link is None:
            return
        metadata = remote["metadata"]
        tracked = self.book.get(uid)
        grace = self.grace_of(tracked) if tracked is not None else self.max_grace
        await self.remove(link, metadata["namespace"], metadata["name"], uid, grace)
        logger.info("removed the stale copy of job %s on %s", uid, cluster)
        self.book.stale_removed(uid, cluster)


def _lacks_ttl(remote: Obj) -> bool:
    """A remote Job that ended and has no TTL yet (the hub recorded it, then failed to set it)."""
    conditions = (remote.get("status") or {}).get("conditions") or []
    ended = any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions
    )
    return ended and (remote.get("spec") or {}).get("ttlSecondsAfterFinished") is None
