"""The orphan sweep: nothing runs, or waits, on a member for a job the hub no longer has.

Every way a job's workload is made or removed is serialised and retried (:mod:`.workload_sync`),
but a member keeps whatever it was given, and some removals cannot be: a member that never
answered the deletion, a crash between a copy and its Job, an object planted by hand under
suanli's labels. So the leader sweeps each member every ``--orphan-sweep-interval``:

- **Jobs and Services** labelled ``app.kubernetes.io/managed-by=suanli``: one whose job uid
  is neither followed by this process nor held by any ComputeJob on the hub is removed, a Job
  with its pods (given at most the platform's grace) and its copies;
- **copies** (Secrets and ConfigMaps labelled ``suanli.io/tenant-data``) are removed, in every
  namespace suanli made on the member, unless their job is followed or unfinished on the hub.
  The hub's identity may not read a member's Secrets, so copies are not listed: one
  delete-by-selector per namespace names the jobs whose copies stay (``notin``).

The hub's word is read once per sweep, a page at a time; a job this process follows counts as
existing whatever the page said, since it was seen after the page was read. Each removal is
counted in ``suanli_orphans_removed_total`` by member and kind; a member that fails is logged,
counted and tried again at the next sweep, and does not hold up the others.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final

from suanli import metrics
from suanli.api.computejob import JobPhase
from suanli.api.kinds import COMPUTEJOBS
from suanli.api.names import COPY_LABEL, JOB_NAMESPACE_LABEL, JOB_UID_LABEL
from suanli.controller.jobs import JobBook
from suanli.controller.ports import Link, Members, Obj, PagedLister
from suanli.members.workload import MANAGED_BY, MANAGED_BY_LABEL

logger = logging.getLogger(__name__)

MANAGED: Final = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
PAGE: Final = 500
_OVER: Final = frozenset({JobPhase.SUCCEEDED.value, JobPhase.FAILED.value, JobPhase.REJECTED.value})

RemoveJob = Callable[[Link, str, str, str, int], Awaitable[None]]
"""Remove a remote Job, its pods (given at most so many seconds) and its copies:
(link, namespace, name, job uid, grace); :meth:`~.workload_sync.WorkloadSync.remove`."""


@dataclass(frozen=True)
class HubJobs:
    """What the hub holds, as one sweep read it: every ComputeJob's uid, and per hub namespace
    the uids of those not over (whose copies must stay)."""

    existing: frozenset[str]
    unfinished: dict[str, set[str]]


def _labels(obj: Obj) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


@dataclass
class OrphanSweep:
    hub: PagedLister
    book: JobBook
    members: Members
    remove_job: RemoveJob
    grace: int
    """The platform's termination grace: an orphan's pods get no more to stop."""

    async def sweep(self) -> None:
        """One pass over every member (see the module notes); raises the first member's
        failure once every member was tried."""
        hub: HubJobs | None = None
        failures: list[Exception] = []
        for cluster in sorted(self.members.names()):
            link = self.members.link(cluster)
            if link is None or not link.synced:
                continue
            try:
                hub = hub or await self._hub_jobs()
                await self._sweep_member(cluster, link, hub)
            except Exception as error:
                metrics.BACKGROUND_TASK_ERRORS.labels("orphan-sweep").inc()
                logger.warning("sweeping %s for orphans failed: %s", cluster, error)
                failures.append(error)
        if failures:
            raise failures[0]

    async def _hub_jobs(self) -> HubJobs:
        existing: set[str] = set()
        unfinished: dict[str, set[str]] = {}
        async for page in self.hub.list_pages(COMPUTEJOBS, limit=PAGE):
            for job in page:
                metadata = job.get("metadata") or {}
                uid = str(metadata.get("uid") or "")
                existing.add(uid)
                if (job.get("status") or {}).get("phase") not in _OVER:
                    unfinished.setdefault(str(metadata.get("namespace") or ""), set()).add(uid)
        return HubJobs(frozenset(existing), unfinished)

    def _orphaned(self, uid: str, hub: HubJobs) -> bool:
        return bool(uid) and uid not in self.book.jobs and uid not in hub.existing

    async def _sweep_member(self, cluster: str, link: Link, hub: HubJobs) -> None:
        for remote in await link.list_jobs():
            metadata = remote.get("metadata") or {}
            uid = _labels(remote).get(JOB_UID_LABEL, "")
            if self._orphaned(uid, hub):
                await self.remove_job(
                    link, metadata["namespace"], metadata["name"], uid, self.grace
                )
                self._removed(cluster, "Job", f"{metadata['namespace']}/{metadata['name']}", uid)
        for service in await link.list_services(MANAGED):
            metadata = service.get("metadata") or {}
            uid = _labels(service).get(JOB_UID_LABEL, "")
            if self._orphaned(uid, hub):
                await link.delete_service(metadata["namespace"], metadata["name"])
                self._removed(
                    cluster, "Service", f"{metadata['namespace']}/{metadata['name']}", uid
                )
        for namespace in await link.list_namespaces(MANAGED):
            name = str((namespace.get("metadata") or {}).get("name") or "")
            tenant = _labels(namespace).get(JOB_NAMESPACE_LABEL, "")
            kept = self._kept(tenant, hub)
            removed = await link.delete_copies(name, copies_to_remove(kept))
            if removed:
                metrics.ORPHANS_REMOVED.labels(cluster, "copy").inc(removed)
                logger.warning("removed %d orphaned copies in %s on %s", removed, name, cluster)

    def _kept(self, tenant: str, hub: HubJobs) -> set[str]:
        """The jobs of hub namespace ``tenant`` whose copies stay: unfinished on the hub, or
        followed here (seen after the hub was read)."""
        kept = set(hub.unfinished.get(tenant, ()))
        kept.update(t.key for t in self.book.jobs.values() if t.request.tenant == tenant)
        return kept

    def _removed(self, cluster: str, kind: str, name: str, uid: str) -> None:
        metrics.ORPHANS_REMOVED.labels(cluster, kind).inc()
        logger.warning(
            "removed the orphaned %s %s on %s: no ComputeJob on the hub has uid %s",
            kind,
            name,
            cluster,
            uid,
        )


def copies_to_remove(kept: Iterable[str]) -> str:
    """The label selector of the copies in one namespace whose job is not in ``kept``."""
    uids = sorted(kept)
    if not uids:
        return f"{COPY_LABEL}=true"
    return f"{COPY_LABEL}=true,{JOB_UID_LABEL} notin ({','.join(uids)})"
