"""Workload sync: each placed job's remote batch Job, made once and kept to one.

The remote Job is made under a deterministic name in a namespace of the tenant's own on the
member (AlreadyExists is success), so making it again, after a crash or a restart, never
yields a second copy. After a restart a placed job is re-attached: its remote Job is looked
up, made if it is missing (its GPUs held in the index again first, so no other job takes
them), and followed. Each (re)list of a member's Jobs makes the missing ones again, and every
report of a Job goes to the follow-up of the job it belongs to (label ``suanli.io/job-uid``).

A job moved off a member leaves a stale copy there when the member did not answer: it is
deleted as soon as the member reports it again, so a job never runs twice.

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

import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from suanli import metrics
from suanli.api.catalogue import member_catalogue
from suanli.api.computejob import ComputeJob, JobPhase
from suanli.api.reasons import JobConditionType, JobReason
from suanli.controller.jobs import JobBook
from suanli.controller.ports import Clock, Dispatching, Link, Members, Obj, Spawn
from suanli.controller.status import StatusWriter, TrackedJob
from suanli.controller.tenant_data import TenantData
from suanli.dispatch.capacity import CapacityIndex, OverPlacementError
from suanli.members.workload import (
    JOB_UID_LABEL,
    gang_service,
    remote_job,
    remote_namespace_object,
)

logger = logging.getLogger(__name__)

Follow = Callable[[TrackedJob, Obj], Coroutine[Any, Any, None]]
"""Mirror a remote Job's state into its job (follow-up)."""


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
    # Gangs (uid) whose headless Service this process made (or found made).
    _services: set[str] = field(default_factory=set)

    async def create_remote(
        self, tracked: TrackedJob, link: Link, job: ComputeJob | None = None
    ) -> None:
        """Create the job's remote Job; ``job``: its model, when the caller has built it."""
        job = job or tracked.model()
        cluster = tracked.dispatched_to or ""
        attempt = tracked.status.last_attempt
        pin = self.members.pin(cluster, attempt.gpu_model if attempt else None)
        try:
            member = self.members.member(cluster)
            if member is None:
                raise LookupError(f"member {cluster} is gone")
            level = member.spec.pod_security_level
            await link.ensure_namespace(remote_namespace_object(job, level))
            await self.tenant_data.copy(job, link)
            # The pin knows the resource its nodes advertise; before the member's nodes are
            # listed (just after a restart) the catalogue says which the model uses.
            model = attempt.gpu_model if attempt else None
            resource = member_catalogue(member).resource_of(model, member.spec.gpu_resource_name)
            created = await link.create_job(remote_job(job, resource, pin))
        except Exception as error:
            logger.warning("creating the remote Job of %s failed: %s", tracked.request.name, error)
            self.index.forget(tracked.key)
            status = tracked.status
            status.cluster = None
            status.remote_ref = None
            status.phase = JobPhase.QUEUED
            tracked.condition(
                JobConditionType.DISPATCHED,
                False,
                JobReason.REMOTE_CREATE_FAILED,
                f"creating the workload on {cluster} failed: {error}",
                now=self.clock(),
            )
            await self.writer.write(tracked)
            self.dispatching.requeue(tracked.request)
            return
        await self._ensure_service(tracked, link, job, created)

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

    async def delete_remote(self, tracked: TrackedJob) -> None:
        """Delete the job's remote Job, if it has one. A member that does not answer gets the
        copy deleted when it answers again (a stale copy), so a deletion never waits on it."""
        cluster = tracked.dispatched_to
        ref = tracked.status.remote_ref
        if not cluster or ref is None:
            return
        link = self.members.link(cluster)
        if link is None:
            return
        self._services.discard(tracked.key)
        try:
            await link.delete_job(ref.namespace, ref.name)
            await self.tenant_data.remove(link, ref.namespace, tracked.key)
        except Exception as error:
            logger.warning(
                "deleting %s's copy on %s failed (%s); removed when the member answers",
                tracked.request.name,
                cluster,
                error,
            )
            self.book.mark_stale(tracked.key, cluster)

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
        if self.book.is_stale(uid, cluster):
            self.spawn(self._remove_stale_copy(uid, cluster, remote))
            return
        tracked = self.book.get(uid)
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
        await link.delete_job(metadata["namespace"], metadata["name"])
        await self.tenant_data.remove(link, metadata["namespace"], uid)
        logger.info("removed the stale copy of job %s on %s", uid, cluster)
        self.book.stale_removed(uid, cluster)


def _lacks_ttl(remote: Obj) -> bool:
    """A remote Job that ended and has no TTL yet (the hub recorded it, then failed to set it)."""
    conditions = (remote.get("status") or {}).get("conditions") or []
    ended = any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions
    )
    return ended and (remote.get("spec") or {}).get("ttlSecondsAfterFinished") is None
