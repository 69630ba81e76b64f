"""Workload sync: each placed job's remote batch Job, made once and kept to one.

The remote Job is made under a deterministic name in a namespace of the tenant's own on the
member (AlreadyExists is success), so making it again, after a crash or a restart, never
yields a second copy. After a restart a placed job is re-attached: its remote Job is looked
up, made if it is missing (its GPUs held in the index again first, so no other job takes
them), and followed. Each (re)list of a member's Jobs makes the missing ones again, and every
report of a Job goes to the follow-up of the job it belongs to (label ``suanli.io/job-uid``).

A job moved off a member leaves a stale copy there when the member did not answer: it is
deleted as soon as the member reports it again, so a job never runs twice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from suanli.api.catalogue import member_catalogue
from suanli.api.computejob import ComputeJob, JobPhase
from suanli.api.reasons import JobConditionType, JobReason
from suanli.controller.jobs import JobBook
from suanli.controller.ports import Clock, Dispatching, Link, Members, Obj, Spawn
from suanli.controller.status import StatusWriter, TrackedJob
from suanli.dispatch.capacity import CapacityIndex, OverPlacementError
from suanli.members.workload import JOB_UID_LABEL, remote_job, remote_namespace_object

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
            # The pin knows the resource its nodes advertise; before the member's nodes are
            # listed (just after a restart) the catalogue says which the model uses.
            model = attempt.gpu_model if attempt else None
            resource = member_catalogue(member).resource_of(model, member.spec.gpu_resource_name)
            await link.create_job(remote_job(job, resource, pin))
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
        try:
            await link.delete_job(ref.namespace, ref.name)
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
        if tracked is None or tracked.dispatched_to != cluster:
            return
        self.spawn(self.follow(tracked, remote))

    async def _remove_stale_copy(self, uid: str, cluster: str, remote: Obj) -> None:
        link = self.members.link(cluster)
        if link is None:
            return
        metadata = remote["metadata"]
        await link.delete_job(metadata["namespace"], metadata["name"])
        logger.info("removed the stale copy of job %s on %s", uid, cluster)
        self.book.stale_removed(uid, cluster)
