"""One admission leader among the operator's replicas, elected with a coordination.k8s.io Lease.

Admission answers from ledgers kept in memory (:mod:`suanli.vouchers.book`), so exactly one
process may admit and keep them: the one holding the Lease. It runs everything else as well
(dispatch, charging, the recount): one writer of every ledger. The others stand by, answer
any admission review sent to them with a refusal to retry, and take over when the leader stops
renewing. The rules are client-go's leader election's:

* a candidate takes the Lease when it is free (no holder: released) or when its record has not
  changed for ``duration`` seconds *by the candidate's own clock* (it notes when it first saw
  each record, so clocks of different machines never have to agree);
* the leader renews every ``retry`` seconds and gives up leading (stops admitting at once, and
  the process exits) when it could not renew for ``renew_deadline`` seconds, which is shorter
  than ``duration``: it stops before anyone else may start;
* on a graceful stop the leader releases the Lease, and says whether it left no hold in flight
  (:data:`SETTLED_ANNOTATION`), so its successor can admit at once.

A new leader must not admit before every hold its predecessor admitted is visible to it: those
are stored with their jobs within the webhook timeout. :func:`admit_after` says how long it
waits.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from suanli import metrics
from suanli.api.common import parse_timestamp
from suanli.api.names import LEASE_NAME, SETTLED_ANNOTATION
from suanli.kube import ConflictError, Hub, NotFoundError

logger = logging.getLogger(__name__)

DELETION_COST: Final = "controller.kubernetes.io/pod-deletion-cost"
LEADER_DELETION_COST: Final = "1000"
"""The leader's pod's deletion cost: a ReplicaSet scaling down removes the standbys first."""


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """Where the Lease is, who we are, and the timings (seconds)."""

    namespace: str
    name: str = LEASE_NAME
    identity: str = ""
    duration: float = 15.0
    renew_deadline: float = 10.0
    retry: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry < self.renew_deadline < self.duration:
            raise ValueError(
                "lease timings must satisfy 0 < retry < renew deadline < duration, got "
                f"{self.retry} < {self.renew_deadline} < {self.duration}"
            )


def default_identity() -> str:
    """The host name (a pod's name in a cluster) and a random suffix: unique per process."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """What a Lease says, as the election reads it."""

    holder: str | None
    renewed: datetime | None
    duration: float
    transitions: int
    settled: bool
    resource_version: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> LeaseRecord:
        spec = body.get("spec") or {}
        metadata = body.get("metadata") or {}
        renewed = spec.get("renewTime") or spec.get("acquireTime")
        return cls(
            holder=spec.get("holderIdentity") or None,
            renewed=parse_timestamp(renewed) if renewed else None,
            duration=float(spec.get("leaseDurationSeconds") or 0),
            transitions=int(spec.get("leaseTransitions") or 0),
            settled=(metadata.get("annotations") or {}).get(SETTLED_ANNOTATION) == "true",
            resource_version=str(metadata.get("resourceVersion") or ""),
        )


def may_take(
    record: LeaseRecord, identity: str, first_seen: float, now: float, duration: float
) -> bool:
    """Whether ``identity`` may hold the Lease: it is ours, free, or unchanged for ``duration``
    seconds since we first saw this record (``first_seen`` and ``now`` on our monotonic clock)."""
    if record.holder in (None, identity):
        return True
    return now - first_seen >= max(duration, record.duration)


def admit_after(
    previous: LeaseRecord | None, taken_at: datetime, webhook_timeout: float, duration: float
) -> datetime:
    """When a new leader may admit: once every hold its predecessor admitted is stored.

    No wait when there was no predecessor, or it released the Lease with no hold in flight.
    Otherwise the predecessor stopped admitting by its last renewal plus the Lease's duration,
    and a job it admitted is stored (or never will be) within the webhook timeout after that;
    never later than the webhook timeout from now, should its clock be ahead of ours.
    """
    if previous is None or (previous.holder is None and previous.settled):
        return taken_at
    latest = taken_at + timedelta(seconds=webhook_timeout)
    if previous.renewed is None:
        return latest
    stopped = previous.renewed + timedelta(seconds=max(duration, previous.duration))
    return max(taken_at, min(latest, stopped + timedelta(seconds=webhook_timeout)))


def _micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Takeover:
    """How this process came to lead: what the Lease said before, and when it took it."""

    previous: LeaseRecord | None
    taken_at: datetime


class LeaseElector:
    """Campaigns for, renews and releases the admission Lease (see the module docs)."""

    def __init__(self, hub: Hub, settings: LeaseSettings) -> None:
        self.hub = hub
        self.settings = settings
        self._seen: tuple[str, float] | None = None  # (resourceVersion, first seen, monotonic)
        self._record: LeaseRecord | None = None
        self._last_renewal = 0.0
        self._written: dict[str, Any] | None = None  # the Lease as this process last wrote it
        self.leading = False

    @property
    def identity(self) -> str:
        return self.settings.identity

    async def acquire(self) -> Takeover:
        """Wait until this process holds the Lease; returns what it said before."""
        announced = False
        while True:
            try:
                takeover = await self._try_take()
            except Exception as error:
                metrics.BACKGROUND_TASK_ERRORS.labels("lease").inc()
                logger.warning("campaigning for the admission lease failed: %s", error)
                takeover = None
            if takeover is not None:
                holder = takeover.previous.holder if takeover.previous else None
                logger.info(
                    "this replica (%s) leads admission now (previous holder: %s)",
                    self.identity,
                    holder or "none",
                )
                metrics.ADMISSION_LEADER.set(1)
                self.leading = True
                return takeover
            if not announced and self._record is not None:
                logger.info(
                    "standing by: %s leads admission (lease %s/%s)",
                    self._record.holder,
                    self.settings.namespace,
                    self.settings.name,
                )
                announced = True
            await asyncio.sleep(self.settings.retry)

    async def keep(self) -> bool:
        """Renew the Lease until renewing fails for the renew deadline, or it is released.

        Returns True when leadership was lost (the caller must stop admitting at once), False
        when :meth:`release` gave it up.
        """
        loop = asyncio.get_running_loop()
        self._last_renewal = loop.time()
        while True:
            await asyncio.sleep(self.settings.retry)
            if not self.leading:
                return False
            try:
                if await self._renew():
                    self._last_renewal = loop.time()
                    continue
                if not self.leading:
                    return False
                logger.error("the admission lease was taken by %s", self._holder())
                break
            except Exception as error:
                metrics.BACKGROUND_TASK_ERRORS.labels("lease").inc()
                logger.warning("renewing the admission lease failed: %s", error)
            if loop.time() - self._last_renewal >= self.settings.renew_deadline:
                logger.error(
                    "could not renew the admission lease for %.0fs: no longer leading",
                    self.settings.renew_deadline,
                )
                break
        self.leading = False
        metrics.ADMISSION_LEADER.set(0)
        return True

    async def release(self, settled: bool) -> None:
        """Give the Lease up (graceful stop), saying whether holds are left in flight."""
        self.leading = False
        metrics.ADMISSION_LEADER.set(0)
        try:
            body = await self.hub.get_lease(self.settings.namespace, self.settings.name)
            if (body.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = dict(body.get("spec") or {})
            spec["holderIdentity"] = None
            spec["renewTime"] = _micro_time(datetime.now(UTC))
            metadata = dict(body["metadata"])
            annotations = dict(metadata.get("annotations") or {})
            annotations[SETTLED_ANNOTATION] = "true" if settled else "false"
            metadata["annotations"] = annotations
            await self.hub.replace_lease({**body, "metadata": metadata, "spec": spec})
            logger.info("released the admission lease (holds settled: %s)", settled)
        except Exception as error:  # the others take over once it expires
            logger.warning("could not release the admission lease: %s", error)

    def _holder(self) -> str:
        return (self._record.holder if self._record else None) or "nobody"

    async def _try_take(self) -> Takeover | None:
        now = datetime.now(UTC)
        try:
            body = await self.hub.get_lease(self.settings.namespace, self.settings.name)
        except NotFoundError:
            try:
                self._written = await self.hub.create_lease(self._body(None, now, transitions=0))
            except ConflictError:
                return None  # another candidate created it first
            return Takeover(None, now)
        record = LeaseRecord.from_body(body)
        self._record = record
        clock = asyncio.get_running_loop().time()
        if self._seen is None or self._seen[0] != record.resource_version:
            self._seen = (record.resource_version, clock)
        if not may_take(record, self.identity, self._seen[1], clock, self.settings.duration):
            return None
        transitions = record.transitions + (record.holder != self.identity)
        try:
            self._written = await self.hub.replace_lease(
                self._body(body, now, transitions=transitions)
            )
        except ConflictError:
            return None
        previous = None if record.holder == self.identity else record
        return Takeover(previous, now)

    async def _renew(self) -> bool:
        # One write per renewal: the Lease as we last wrote it, guarded by its resourceVersion;
        # only a conflict (someone else wrote it) costs a read.
        body = self._written
        if body is None:
            body = await self.hub.get_lease(self.settings.namespace, self.settings.name)
        record = LeaseRecord.from_body(body)
        self._record = record
        if record.holder != self.identity:
            return False
        try:
            self._written = await self.hub.replace_lease(
                self._body(body, datetime.now(UTC), transitions=record.transitions)
            )
        except ConflictError:
            self._written = None  # read it afresh next time: still ours, or taken
            raise
        return True

    def _body(
        self, current: Mapping[str, Any] | None, now: datetime, *, transitions: int
    ) -> dict[str, Any]:
        spec = dict((current or {}).get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = _micro_time(now)
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=int(self.settings.duration),
            renewTime=_micro_time(now),
            leaseTransitions=transitions,
        )
        metadata: dict[str, Any] = dict((current or {}).get("metadata") or {})
        metadata.update(name=self.settings.name, namespace=self.settings.namespace)
        annotations = dict(metadata.get("annotations") or {})
        annotations.pop(SETTLED_ANNOTATION, None)
        metadata["annotations"] = annotations
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": spec,
        }
