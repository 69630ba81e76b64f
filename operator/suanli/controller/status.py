"""A tracked job's status as a typed record, its wire form, and the writer of it.

The controller is the only writer of a ComputeJob's status, so it keeps the status it last
wrote (or is about to write) and sends it whole as a JSON merge patch; nothing is read back.
The status is :class:`JobStatus`, a slotted dataclass with a typed field per status field and
typed attempts (:class:`AttemptRecord`). It is converted at the two edges only: from the stored
job's model when the controller first sees the job (:meth:`JobStatus.from_model`), and to the
patch on every write (:meth:`JobStatus.to_wire`), whose form is the API's (the same keys, money
as two-decimal strings, times as RFC 3339 in whole seconds), as tenants and the e2e tests read
it.

Slots, and plain values rather than pydantic models (conditions excepted: they are the API's
own type, edited in place by :func:`~suanli.api.common.set_condition`), keep a job in flight
small: thousands may be queued at once.

:class:`StatusWriter` writes one job's status at a time, each write carrying the latest record,
so a slow earlier write can never land after a later one.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from suanli.api.common import (
    Condition,
    ConditionStatus,
    ObjectMeta,
    format_money,
    format_timestamp,
    set_condition,
)
from suanli.api.computejob import (
    Attempt,
    ComputeJob,
    ComputeJobSpec,
    ComputeJobStatus,
    JobPhase,
    PodFailure,
)
from suanli.api.kinds import COMPUTEJOBS
from suanli.api.meta import API_VERSION
from suanli.api.reasons import JobConditionType
from suanli.controller.ports import StatusPatcher
from suanli.dispatch.models import JobRequest
from suanli.vouchers.keys import object_key

ATTEMPT_MESSAGE_MAX: Final = 1024
CONDITION_MESSAGE_MAX: Final = 32768


def whole_seconds(moment: datetime) -> datetime:
    """``moment`` as the wire keeps it (UTC, whole seconds): a time computed from a recorded
    one must be the same whether the record was made by this process or read back after a
    restart."""
    return moment.astimezone(UTC).replace(microsecond=0)


@dataclass(slots=True)
class AttemptRecord:
    """One placement of the job on a member (the API's ``Attempt``)."""

    cluster: str
    provider: str | None = None
    region: str | None = None
    gpu_model: str | None = None
    price_per_gpu_hour: Decimal | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    reason: str | None = None
    message: str | None = None
    gpu_seconds: int | None = None
    charge: Decimal | None = None

    @classmethod
    def from_model(cls, attempt: Attempt) -> AttemptRecord:
        return cls(
            cluster=attempt.cluster,
            provider=attempt.provider,
            region=attempt.region,
            gpu_model=attempt.gpu_model,
            price_per_gpu_hour=attempt.price_per_gpu_hour,
            start_time=attempt.start_time,
            end_time=attempt.end_time,
            reason=attempt.reason,
            message=attempt.message,
            gpu_seconds=attempt.gpu_seconds,
            charge=attempt.charge,
        )

    @property
    def ended(self) -> bool:
        return self.end_time is not None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"cluster": self.cluster}
        _put(wire, "provider", self.provider)
        _put(wire, "region", self.region)
        _put(wire, "gpuModel", self.gpu_model)
        _put(wire, "pricePerGPUHour", _money(self.price_per_gpu_hour))
        _put(wire, "startTime", _time(self.start_time))
        _put(wire, "endTime", _time(self.end_time))
        _put(wire, "reason", self.reason)
        _put(wire, "message", self.message)
        _put(wire, "gpuSeconds", self.gpu_seconds)
        _put(wire, "charge", _money(self.charge))
        return wire


@dataclass(frozen=True, slots=True)
class RemoteRef:
    """The workload made for the job on its member (the API's ``RemoteObjectReference``)."""

    namespace: str
    name: str
    api_version: str = "batch/v1"
    kind: str = "Job"
    uid: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
        }
        _put(wire, "uid", self.uid)
        return wire


@dataclass(slots=True)
class JobStatus:
    """A ComputeJob's status as the controller keeps it (see the module notes)."""

    phase: JobPhase | None = None
    observed_generation: int | None = None
    total_gpus: int | None = None
    voucher: str | None = None
    cluster: str | None = None
    remote_ref: RemoteRef | None = None
    reservation: Decimal | None = None
    estimated_cost: Decimal | None = None
    charged_cost: Decimal | None = None
    gpu_seconds: int | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    # Why the pods of the last failed attempt failed; the API's models, as conditions are:
    # written once, when a job fails.
    failures: list[PodFailure] = field(default_factory=list)
    conditions: list[Condition] = field(default_factory=list)

    @classmethod
    def from_model(cls, status: ComputeJobStatus) -> JobStatus:
        ref = status.remote_ref
        return cls(
            phase=status.phase,
            observed_generation=status.observed_generation,
            total_gpus=status.total_gpus,
            voucher=status.voucher,
            cluster=status.cluster,
            remote_ref=(
                RemoteRef(ref.namespace, ref.name, ref.api_version, ref.kind, ref.uid)
                if ref is not None
                else None
            ),
            reservation=status.reservation,
            estimated_cost=status.estimated_cost,
            charged_cost=status.charged_cost,
            gpu_seconds=status.gpu_seconds,
            start_time=status.start_time,
            completion_time=status.completion_time,
            attempts=[AttemptRecord.from_model(a) for a in status.attempts],
            failures=[f.model_copy() for f in status.failures],
            conditions=[c.model_copy() for c in status.conditions],
        )

    def to_wire(self) -> dict[str, Any]:
        """The status as the merge patch writes it.

        ``cluster`` and ``remoteRef`` are always sent, null when unset: a job moved off its
        member must lose them, and null is how a merge patch removes a field. Every other
        field, once set, is never unset, and is left out while it has no value.
        """
        wire: dict[str, Any] = {}
        _put(wire, "phase", self.phase.value if self.phase is not None else None)
        _put(wire, "observedGeneration", self.observed_generation)
        _put(wire, "totalGPUs", self.total_gpus)
        _put(wire, "voucher", self.voucher)
        wire["cluster"] = self.cluster
        wire["remoteRef"] = self.remote_ref.to_wire() if self.remote_ref is not None else None
        _put(wire, "reservation", _money(self.reservation))
        _put(wire, "estimatedCost", _money(self.estimated_cost))
        _put(wire, "chargedCost", _money(self.charged_cost))
        _put(wire, "gpuSeconds", self.gpu_seconds)
        _put(wire, "startTime", _time(self.start_time))
        _put(wire, "completionTime", _time(self.completion_time))
        wire["attempts"] = [attempt.to_wire() for attempt in self.attempts]
        wire["failures"] = [
            f.model_dump(mode="json", by_alias=True, exclude_none=True) for f in self.failures
        ]
        wire["conditions"] = [
            c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in self.conditions
        ]
        return wire

    def copy(self) -> JobStatus:
        """A copy to edit while this one stays as it is (conditions change in place)."""
        return dataclasses.replace(
            self,
            attempts=[dataclasses.replace(a) for a in self.attempts],
            failures=list(self.failures),
            conditions=[c.model_copy() for c in self.conditions],
        )

    @property
    def last_attempt(self) -> AttemptRecord | None:
        return self.attempts[-1] if self.attempts else None

    def set_condition(
        self,
        kind: JobConditionType,
        true: bool,
        reason: str,
        message: str,
        *,
        now: datetime,
        generation: int | None,
    ) -> None:
        set_condition(
            self.conditions,
            kind,
            ConditionStatus.TRUE if true else ConditionStatus.FALSE,
            reason,
            message[:CONDITION_MESSAGE_MAX],
            now=now,
            observed_generation=generation,
        )


def _put(wire: dict[str, Any], key: str, value: object) -> None:
    if value is not None:
        wire[key] = value


def _money(value: Decimal | None) -> str | None:
    return format_money(value) if value is not None else None


def _time(value: datetime | None) -> str | None:
    return format_timestamp(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class JobIdentity:
    """Who a tracked job is: what its status writes, Events and ledger entry are addressed to."""

    namespace: str
    name: str
    uid: str
    generation: int | None
    created: datetime | None

    @property
    def job_key(self) -> str:
        """``namespace/name``, for people; the ledger keys the job by its uid."""
        return object_key(self.namespace, self.name)

    def reference(self) -> dict[str, Any]:
        """The job as an Event's ``regarding``."""
        return {
            "apiVersion": API_VERSION,
            "kind": "ComputeJob",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }


@dataclass(slots=True)
class TrackedJob:
    """A ComputeJob the controller is responsible for, with the status it last wrote.

    Its spec is kept as JSON text, a few hundred bytes, and read back into a model only to make
    the remote Job (:meth:`model`): a model of each job in flight took 8 KB, and with thousands
    of jobs queued those copies were the largest part of the operator's memory.
    """

    identity: JobIdentity
    spec_json: bytes
    request: JobRequest
    status: JobStatus
    # The remote workload ended (or the job gave up): it is being closed, its charge may still
    # be on the way, and nothing the member reports may start it again.
    ended: bool = False
    # False while the status holds changes not written yet (a new job's admission record).
    written: bool = True
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Held while the job's remote workload is made or removed, so a deletion never runs while a
    # launch is between its awaits (and the launch, once it has the lock, sees the deletion).
    remote_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Remote creates that failed for this job (a failed create uses no attempt; see
    # workload_sync); and when its deletion was seen, kept across the finalizer's retries.
    dispatch_failures: int = 0
    deleted_at: datetime | None = None

    @classmethod
    def of(
        cls, job: ComputeJob, request: JobRequest, status: JobStatus, *, written: bool
    ) -> TrackedJob:
        meta = job.metadata
        identity = JobIdentity(
            namespace=meta.namespace or "",
            name=meta.name or "",
            uid=meta.uid or "",
            generation=meta.generation,
            created=meta.creation_timestamp,
        )
        spec = job.spec.model_dump_json(by_alias=True, exclude_none=True).encode()
        return cls(identity, spec, request, status, written=written)

    def model(self) -> ComputeJob:
        """The job as a model again: its identity and spec (not its status)."""
        identity = self.identity
        metadata = ObjectMeta(
            name=identity.name,
            namespace=identity.namespace,
            uid=identity.uid,
            generation=identity.generation,
            creation_timestamp=identity.created,
        )
        spec = ComputeJobSpec.model_validate_json(self.spec_json)
        return ComputeJob(metadata=metadata, spec=spec)

    @property
    def key(self) -> str:
        return self.request.key

    @property
    def dispatched_to(self) -> str | None:
        return self.status.cluster or None

    @property
    def live_on_member(self) -> bool:
        """Placed on a member and not over: its GPUs there are the tenant's."""
        return bool(self.status.cluster) and not self.ended

    def condition(
        self, kind: JobConditionType, true: bool, reason: str, message: str, *, now: datetime
    ) -> None:
        self.status.set_condition(
            kind, true, reason, message, now=now, generation=self.identity.generation
        )


class StatusWriter:
    """Writes tracked jobs' statuses through the hub, one write per job at a time."""

    def __init__(self, hub: StatusPatcher) -> None:
        self._hub = hub

    async def write(self, tracked: TrackedJob) -> None:
        identity = tracked.identity
        async with tracked.write_lock:
            # Serialised under the lock: the latest record, not the one when this was called.
            patch = {"status": tracked.status.to_wire()}
            await self._hub.patch_status(COMPUTEJOBS, identity.namespace, identity.name, patch)
            tracked.written = True


__all__ = [
    "AttemptRecord",
    "JobIdentity",
    "JobStatus",
    "RemoteRef",
    "StatusWriter",
    "TrackedJob",
    "whole_seconds",
]
