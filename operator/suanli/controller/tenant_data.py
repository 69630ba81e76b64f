"""Tenant data on members: job-scoped copies of the Secrets and ConfigMaps a template names.

Before a job's remote Job is made, every Secret and ConfigMap its template names
(:func:`~suanli.api.references.template_references`) is read from the job's hub namespace and
written to the member under the job's own names (:mod:`suanli.members.copies`), so the pods find
them when they start. While the job runs, :meth:`TenantData.resync` (a background loop) reads
the originals again and rewrites a copy whose content changed: a rotated credential reaches
the member. What was written is remembered by a digest, so an unchanged original costs one read
on the hub and nothing on the member. When the job ends, is deleted or leaves its member, its
copies there are deleted by label (:meth:`TenantData.remove`).

A required reference whose object is gone when the job is dispatched fails the dispatch (the
job is queued again, and its Dispatched condition names the object); admission refuses it in
the first place. An optional one is skipped until it appears.

Every read is checked before anything is written: an ``envFrom`` source whose keys, prefixed,
would set a device-selecting variable (``NVIDIA_VISIBLE_DEVICES`` and its kin,
:func:`~suanli.api.references.device_env_errors`) is never copied. At dispatch that fails the
create (:class:`TenantDataRefusedError`); at a resync the job's copies stay as they were, and an
Event on the job says why, once per refusal. Admission refuses such a source in the first
place; the checks here catch a source that gains such a key afterwards.

A resync holds the job's ``remote_lock`` and writes only while the job is still followed, so a
copy can never land after the job's deletion removed its copies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from suanli import metrics
from suanli.api.computejob import ComputeJob
from suanli.api.names import COPY_LABEL, JOB_UID_LABEL
from suanli.api.reasons import JobReason
from suanli.api.references import (
    DataKind,
    Reference,
    data_keys,
    device_env_errors,
    template_references,
)
from suanli.api.validation import format_errors
from suanli.controller.jobs import JobBook
from suanli.controller.ports import EventRecorder, Link, Members, TenantDataReader
from suanli.controller.status import TrackedJob
from suanli.kube import NotFoundError
from suanli.members.copies import content_hash, data_copy
from suanli.members.workload import job_labels, remote_name, remote_namespace

logger = logging.getLogger(__name__)

READ_CONCURRENCY: Final = 8
"""Reads of referenced objects in flight at once for one job."""
_MAY_REFER: Final = (b"secret", b"configMap")
"""A spec without either word names no tenant data: the resync skips it without parsing it."""


def copies_selector(uid: str) -> str:
    """The label selector of a job's copies on its member."""
    return f"{JOB_UID_LABEL}={uid},{COPY_LABEL}=true"


async def read_sources(
    hub: TenantDataReader, namespace: str, references: Iterable[Reference]
) -> dict[tuple[DataKind, str], dict[str, Any]]:
    """Each Secret and ConfigMap ``references`` name, read from ``namespace`` once, at most
    :data:`READ_CONCURRENCY` at a time; one that does not exist is left out."""
    keys = sorted({(r.kind, r.name) for r in references})
    slots = asyncio.Semaphore(READ_CONCURRENCY)

    async def read(kind: DataKind, name: str) -> dict[str, Any] | None:
        async with slots:
            try:
                return await hub.core_get(kind.plural, namespace, name)
            except NotFoundError:
                return None

    bodies = await asyncio.gather(*(read(kind, name) for kind, name in keys))
    return {key: body for key, body in zip(keys, bodies, strict=True) if body is not None}


class TenantDataRefusedError(LookupError):
    """A referenced Secret or ConfigMap may not be copied: its keys would set a
    device-selecting variable through ``envFrom``."""


@dataclass
class TenantData:
    hub: TenantDataReader
    book: JobBook
    members: Members
    events: EventRecorder
    # Per job (uid): the digest of each copy written, by (kind, original name).
    _written: dict[str, dict[tuple[DataKind, str], str]] = field(default_factory=dict)
    # Per job (uid): the refusal its Event last said, so it is said once, not every resync.
    _refusals: dict[str, str] = field(default_factory=dict)

    async def copy(self, job: ComputeJob, link: Link) -> None:
        """Write the copies of what ``job``'s template names that are missing or out of date.

        Raises:
            LookupError: a required Secret or ConfigMap does not exist on the hub.
            TenantDataRefusedError: a source would set a device-selecting variable (nothing is
                written then).
        """
        uid = job.metadata.uid or ""
        namespace = job.metadata.namespace or ""
        references = template_references(job.spec.template)
        if not references:
            return
        sources = await read_sources(self.hub, namespace, references)
        for reference in references:
            if not reference.optional and (reference.kind, reference.name) not in sources:
                raise LookupError(
                    f"{reference.path}: {reference.kind} {reference.name!r} does not exist in "
                    f"namespace {namespace!r}"
                )
        keys = {key: data_keys(key[0], source) for key, source in sources.items()}
        refused = device_env_errors(references, keys)
        if refused:
            raise TenantDataRefusedError(format_errors(refused))
        written = self._written.setdefault(uid, {})
        for (kind, name), source in sorted(sources.items()):
            digest = content_hash(kind, source)
            if written.get((kind, name)) == digest:
                continue
            body = data_copy(
                kind,
                source,
                job_name=remote_name(job),
                namespace=remote_namespace(job),
                labels=job_labels(job),
            )
            await link.apply_copy(body)
            written[(kind, name)] = digest

    async def resync(self) -> None:
        """Bring every running job's copies up to date with their originals (one pass)."""
        for tracked in list(self.book.jobs.values()):
            spec = tracked.spec_json
            if not tracked.live_on_member or not any(word in spec for word in _MAY_REFER):
                continue
            try:
                await self._resync(tracked)
            except TenantDataRefusedError as refused:
                await self._say_refused(tracked, str(refused))
            except Exception as error:  # one job's failure must not hold up the others
                metrics.BACKGROUND_TASK_ERRORS.labels("tenant-data-sync").inc()
                logger.warning("syncing %s's copies failed: %s", tracked.request.name, error)

    async def _resync(self, tracked: TrackedJob) -> None:
        async with tracked.remote_lock:
            # Deleted, ended or moved while this waited: its copies are not this pass's.
            link = self.members.link(tracked.dispatched_to or "")
            if link is None or not self.book.current(tracked) or not tracked.live_on_member:
                return
            await self.copy(tracked.model(), link)
        self._refusals.pop(tracked.key, None)

    async def _say_refused(self, tracked: TrackedJob, message: str) -> None:
        metrics.TENANT_DATA_REFUSED.inc()
        if self._refusals.get(tracked.key) == message:
            return
        self._refusals[tracked.key] = message
        logger.warning("not syncing %s's copies: %s", tracked.request.name, message)
        await self.events.event(
            tracked.identity.reference(),
            reason=JobReason.TENANT_DATA_REFUSED,
            message=f"The copies on {tracked.dispatched_to} keep their earlier content: {message}",
            warning=True,
        )

    async def remove(self, link: Link, namespace: str, uid: str) -> None:
        """Delete job ``uid``'s copies in the member ``namespace``."""
        await link.delete_copies(namespace, copies_selector(uid))
        self._written.pop(uid, None)
        self._refusals.pop(uid, None)
