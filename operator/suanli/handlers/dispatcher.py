"""The dispatcher: admitted ComputeJobs to member clusters, followed to the end, charged once.

It owns the live state the pure dispatch code decides on: a CapacityIndex fed by each member's
node, pod and telemetry watches (a MemberLink per MemberCluster), and the PendingQueue. One
task drains the queue whenever something may have freed capacity; placements are assumed in
the index before anything is awaited, so concurrent decisions never over-place.

For each placed job the choice is recorded in the job's status first and the remote Job is
created afterwards under a deterministic name, so a crash in between is repaired on restart by
creating it again (AlreadyExists is success) and never yields a second copy. The remote Job's
watch mirrors progress into the ComputeJob's status; when it ends, the GPU time it used is
charged on the voucher (settle is idempotent: charged exactly once) and the rest of the hold
is released.

Everything here runs on the operator's event loop; MemberLink callbacks arrive on it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from suanli import metrics
from suanli.api.common import (
    Condition,
    ConditionStatus,
    ObjectMeta,
    format_money,
    parse_money,
    parse_timestamp,
    set_condition,
)
from suanli.api.computejob import (
    Attempt,
    ComputeJob,
    ComputeJobSpec,
    JobPhase,
    RemoteObjectReference,
)
from suanli.api.membercluster import MemberCluster
from suanli.api.meta import API_VERSION
from suanli.api.reasons import JobConditionType, JobReason, MemberReason
from suanli.dispatch.capacity import CapacityIndex, OverPlacementError
from suanli.dispatch.kube import node_from_k8s, pod_from_k8s
from suanli.dispatch.models import ClusterInfo, JobRequest, NodeInfo
from suanli.dispatch.queue import PendingQueue, Placed
from suanli.handlers.ledger_writer import VoucherGoneError
from suanli.members import kubeconfig as kubeconfigs
from suanli.members.link import LinkEvents, MemberLink, MemberLinkError
from suanli.members.workload import (
    JOB_UID_LABEL,
    ModelPin,
    remote_job,
    remote_name,
    remote_namespace,
    remote_namespace_object,
)
from suanli.vouchers.keys import object_key
from suanli.vouchers.ledger import EntryState, NotReservedError
from suanli.vouchers.pricing import charge_for, gpu_seconds

if TYPE_CHECKING:
    from suanli.handlers.runtime import Runtime

logger = logging.getLogger(__name__)

PLURAL: Final = "computejobs"
DISPATCH_CONCURRENCY: Final = 32
"""Placed (or newly waiting) jobs whose writes are in flight at once, across passes."""
PASS_INTERVAL_SECONDS: Final = 0.2
"""The least time between two dispatch passes: the kicks of a burst make one pass, not many."""
METRICS_INTERVAL_SECONDS: Final = 1.0
UNWRITTEN_GRACE_SECONDS: Final = 1.0
"""How long a new job's admission record may wait to go out with its first dispatch write."""


@dataclass(frozen=True, slots=True)
class JobIdentity:
    """Who a tracked job is: what its status writes, Events and ledger entry are addressed to."""

    namespace: str
    name: str
    uid: str
    generation: int | None
    created: datetime | None

    @property
    def ledger_key(self) -> str:
        return object_key(self.namespace, self.name)


@dataclass(slots=True)
class TrackedJob:
    """A ComputeJob the dispatcher is responsible for, with the status it last wrote.

    Its spec is kept as JSON text, a few hundred bytes, and read back into a model only to make
    the remote Job (:meth:`model`): a model of each job in flight took 8 KB, and with thousands
    of jobs queued those copies were the largest part of the operator's memory.
    """

    identity: JobIdentity
    spec_json: bytes
    request: JobRequest
    status: dict[str, Any]
    finished: bool = False
    # False while the status holds changes not written yet (a new job's admission record).
    written: bool = True
    # Status writes of one job go out one at a time, each with the latest status, so a slow
    # earlier write can never land after a later one.
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def of(
        cls, job: ComputeJob, request: JobRequest, status: dict[str, Any], *, written: bool
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
        cluster = self.status.get("cluster")
        return str(cluster) if cluster else None


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Dispatcher:
    runtime: Runtime
    index: CapacityIndex = field(default_factory=CapacityIndex)
    queue: PendingQueue = field(default_factory=PendingQueue)
    links: dict[str, MemberLink] = field(default_factory=dict)
    members: dict[str, MemberCluster] = field(default_factory=dict)
    reachable: dict[str, bool] = field(default_factory=dict)
    jobs: dict[str, TrackedJob] = field(default_factory=dict)
    _kick: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    # Why each queued job waits, as its status says it (job uid -> summary), and what it is to
    # say once a write slot is free; jobs (uid) with such a write on the way.
    _waiting_reasons: dict[str, str] = field(default_factory=dict)
    _waiting_due: dict[str, tuple[str, str]] = field(default_factory=dict)
    _marking: set[str] = field(default_factory=set)
    # GPU feature discovery product label per (cluster, model), to pin pods to the model.
    _pins: dict[tuple[str, str], ModelPin] = field(default_factory=dict)
    # When each unreachable member stopped answering.
    _lost_since: dict[str, datetime] = field(default_factory=dict)
    # Why a member has no link: its kubeconfig Secret unreadable, its kubeconfig refused or
    # unusable (reason and message for its status conditions).
    link_problems: dict[str, tuple[MemberReason, str]] = field(default_factory=dict)
    # The kubeconfig each member's link (or refusal) was made from: a different one in its
    # Secret is a rotation, and the member is connected again with it.
    _kubeconfigs: dict[str, str] = field(default_factory=dict)
    # One connection attempt per member at a time (MemberCluster events and the kubeconfig
    # check both connect).
    _connecting: dict[str, asyncio.Lock] = field(default_factory=dict)
    # The last failure of each member's kubeconfig check, so it is logged once, not each time.
    _check_failures: dict[str, str] = field(default_factory=dict)
    # Members whose link's credentials the member refuses (401/403), as last seen.
    _refused: set[str] = field(default_factory=set)
    # Jobs (uid) whose pods the member's scheduler refused, and since when (monotonic).
    _unschedulable_since: dict[str, float] = field(default_factory=dict)
    # Remote copies left on members the job moved away from (uid -> clusters), deleted as soon
    # as those members answer again, so a job never runs twice.
    _stale_copies: dict[str, set[str]] = field(default_factory=dict)
    # Jobs (uid) finished and charged by this process: the late echoes of our own earlier
    # writes must not start them again.
    _finished: set[str] = field(default_factory=set)
    # Shared by every pass: a pass hands its writes over and ends, so the next pass can place
    # the jobs admitted meanwhile instead of waiting for the slowest write of this one.
    _write_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(DISPATCH_CONCURRENCY)
    )

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dispatcher")
        self._spawn(self._watchdog())
        self._spawn(self._publish_metrics_every(METRICS_INTERVAL_SECONDS))
        self._spawn(self._check_kubeconfigs_every(self.runtime.options.kubeconfig_check_seconds))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for link in list(self.links.values()):
            await link.stop()
        self.links.clear()

    def kick(self) -> None:
        """Something may have freed capacity or queued a job: drain the queue soon."""
        self._kick.set()

    async def _run(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            try:
                await self._drain()
            except Exception:  # the loop must outlive one bad pass; the next kick retries
                logger.exception("dispatch pass failed")
            await asyncio.sleep(PASS_INTERVAL_SECONDS)

    async def _drain(self) -> None:
        if not len(self.queue):
            return
        # Never decide on a partial view: after a (re)start, a member whose pods are not
        # listed yet would look emptier than it is. Its sync callbacks kick again.
        # A member that refuses the link's credentials will not sync until its admin acts:
        # it is not ready (see _notice_refused_credentials) and must not hold up the others.
        unsynced = [
            name
            for name, link in self.links.items()
            if self.reachable.get(name) and not link.synced and name not in self._refused
        ]
        if unsynced:
            return
        result = await self.queue.drain_async(self.index, held=self._held())
        # Every placement is assumed in the index already, so their writes may overlap, with
        # each other and with later passes. One at a time, dispatch was capped by the sum of a
        # job's round trips (status write, remote Job create); a pass that waited for all of
        # its writes held up every job admitted meanwhile behind its slowest write.
        for placed in result.placed:
            self._spawn(_bounded(self._write_slots, self._dispatch(placed)))
        for key, decision in result.waiting.items():
            self._say_waiting(key, decision.reason, decision.summary)

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
            self._spawn(_bounded(self._write_slots, self._mark_waiting(key)))

    async def _publish_metrics_every(self, seconds: float) -> None:
        while True:
            self._publish_metrics()
            await asyncio.sleep(seconds)

    def _publish_metrics(self) -> None:
        phases: dict[str, int] = dict.fromkeys((p.value for p in JobPhase), 0)
        for tracked in self.jobs.values():
            phase = str(tracked.status.get("phase") or JobPhase.PENDING.value)
            phases[phase] = phases.get(phase, 0) + 1
        for phase, count in phases.items():
            metrics.JOBS_BY_PHASE.labels(phase).set(count)
        metrics.QUEUE_DEPTH.set(len(self.queue))

    def _held(self) -> dict[str, int]:
        held: dict[str, int] = {}
        for tracked in self.jobs.values():
            if tracked.dispatched_to and not tracked.finished:
                tenant = tracked.request.tenant
                held[tenant] = held.get(tenant, 0) + tracked.request.total_gpus
        return held

    # --- members ----------------------------------------------------------------------------

    async def member_upsert(self, body: dict[str, Any]) -> None:
        member = MemberCluster.model_validate({**body, "status": body.get("status") or {}})
        name = member.metadata.name or ""
        previous = self.members.get(name)
        self.members[name] = member
        self._refresh_cluster(name)
        unchanged = (
            previous is not None
            and previous.spec.kubeconfig_secret_ref == member.spec.kubeconfig_secret_ref
            and previous.spec.telemetry_endpoints == member.spec.telemetry_endpoints
            and name in self.links
        )
        if not unchanged:
            await self._connect(member)
        self.kick()

    async def member_delete(self, name: str) -> None:
        self.members.pop(name, None)
        link = self.links.pop(name, None)
        if link is not None:
            await link.stop()
        self.index.delete_cluster(name)
        self.reachable.pop(name, None)
        self.link_problems.pop(name, None)
        self._kubeconfigs.pop(name, None)
        self._check_failures.pop(name, None)
        self._refused.discard(name)

    def _refresh_cluster(self, name: str) -> None:
        member = self.members.get(name)
        if member is None:
            return
        info = ClusterInfo.from_member(member)
        reachable = self.reachable.get(name)
        if reachable is not None:
            # The link's own probe is fresher than the status condition it also feeds.
            message = "" if reachable else "its API server does not answer"
            if name in self._refused:
                reachable, message = False, "it refuses the hub's credentials"
            info = dataclasses.replace(info, ready=reachable, not_ready_message=message)
        self.index.upsert_cluster(info)

    async def _connect(self, member: MemberCluster) -> None:
        """(Re)connect to ``member`` with the kubeconfig its Secret holds now."""
        name = member.metadata.name or ""
        lock = self._connecting.setdefault(name, asyncio.Lock())
        async with lock:
            current = self.members.get(name)
            if current is None:
                return  # deleted while this waited for the lock
            await self._connect_now(current)

    async def _connect_now(self, member: MemberCluster) -> None:
        """Make before break: the new link starts before the old one stops, so a rotation
        leaves no moment without a link (the member stays reachable, dispatch goes on)."""
        name = member.metadata.name or ""
        source = _secret_source(member)
        try:
            kubeconfig = await self._read_kubeconfig(member)
        except Exception as error:  # a missing Secret leaves the member unreachable
            self._kubeconfigs.pop(name, None)
            await self._disconnect(
                name,
                MemberReason.KUBECONFIG_SECRET_NOT_FOUND,
                f"The kubeconfig in {source} cannot be read: {error}. Create it, or fix "
                "spec.kubeconfigSecretRef; the operator tries again every "
                f"{self.runtime.options.kubeconfig_check_seconds:.0f}s.",
            )
            return
        self._kubeconfigs[name] = kubeconfig
        # Before any client exists: building one already runs an exec plugin.
        refused = kubeconfigs.refusals(
            kubeconfig, allow_exec=self.runtime.options.allow_kubeconfig_exec
        )
        if refused:
            message = kubeconfigs.refusal_message(refused, source)
            await self._disconnect(name, MemberReason.KUBECONFIG_REFUSED, message)
            return
        gpu_resource = member.spec.gpu_resource_name
        events = LinkEvents(
            on_nodes_synced=lambda c, nodes: self._nodes_synced(c, nodes, gpu_resource),
            on_node=lambda c, t, node: self._node(c, t, node, gpu_resource),
            on_pods_synced=lambda c, pods: self._pods_synced(c, pods, gpu_resource),
            on_pod=lambda c, t, pod: self._pod(c, t, pod, gpu_resource),
            on_jobs_synced=self._jobs_synced,
            on_job=self._job_event,
            on_reachability=self._on_reachability,
            on_telemetry=self._on_telemetry,
        )
        link = MemberLink(
            name,
            kubeconfig,
            events,
            telemetry_endpoints=tuple(member.spec.telemetry_endpoints),
        )
        old = self.links.get(name)
        self.links[name] = link
        try:
            await link.start()
        except MemberLinkError as error:
            if self.links.get(name) is link:
                self.links.pop(name)
            if old is not None:
                await old.stop()
            await self._disconnect(
                name,
                MemberReason.KUBECONFIG_INVALID,
                f"The kubeconfig in {source} cannot be used: {error}",
            )
            return
        self.link_problems.pop(name, None)
        if old is not None:
            await old.stop()

    async def _disconnect(self, name: str, reason: MemberReason, message: str) -> None:
        """Stop the member's link, if any, and say why there is none (``link_problems``)."""
        old = self.links.pop(name, None)
        if old is not None:
            await old.stop()
        if self.link_problems.get(name) != (reason, message):  # logged once, not every retry
            logger.warning("member %s not connected: %s", name, message)
        self.link_problems[name] = (reason, message)
        self._on_reachability(name, False, message)

    async def _read_kubeconfig(self, member: MemberCluster) -> str:
        reference = member.spec.kubeconfig_secret_ref
        secret = await self.runtime.hub.secret(reference.namespace, reference.name)
        if reference.key not in secret:
            raise LookupError(f"it has no key {reference.key!r}")
        return secret[reference.key]

    def connection_problem(self, name: str) -> tuple[MemberReason, str] | None:
        """Why the operator cannot work with member ``name`` although its API server may be
        up (no link, or credentials refused), as a reason and a message for its conditions."""
        problem = self.link_problems.get(name)
        if problem is not None:
            return problem
        link = self.links.get(name)
        refused = link.credentials_refused if link is not None else None
        if refused is None:
            return None
        member = self.members.get(name)
        source = _secret_source(member) if member is not None else "its kubeconfig Secret"
        return (
            MemberReason.CREDENTIALS_REFUSED,
            f"The member refuses the hub's credentials ({refused}). The token may be expired "
            "or revoked, or the hub's identity lacks a permission: ask the member's admin to "
            "apply `suanli member access` and to make a kubeconfig with `suanli member "
            f"kubeconfig`, then store it in {source}; the operator reconnects within "
            f"{self.runtime.options.kubeconfig_check_seconds:.0f}s, no restart needed.",
        )

    async def _check_kubeconfigs_every(self, seconds: float) -> None:
        """Read every member's kubeconfig Secret every ``seconds``; reconnect the members
        whose kubeconfig changed (a rotated token) and those whose Secret was unreadable.

        A periodic GET of each referenced Secret rather than a watch: the operator then needs
        only ``get`` on Secrets (no list or watch, which would hand it every Secret of the
        namespace), it reads no Secret no member refers to, and the cost is bounded: one
        small request per member per interval. A rotation takes effect within the interval;
        the old token must stay valid that long (docs/cluster-admins.md says so).
        """
        while True:
            await asyncio.sleep(seconds)
            for name in list(self.members):
                try:
                    await self._check_kubeconfig(name)
                except Exception as error:  # one member's failure must not stop the others
                    metrics.MEMBER_KUBECONFIG_CHECK_ERRORS.labels(name).inc()
                    text = f"{type(error).__name__}: {error}"
                    if self._check_failures.get(name) != text:
                        logger.warning("member %s: checking its kubeconfig failed: %s", name, text)
                        self._check_failures[name] = text
                else:
                    self._check_failures.pop(name, None)

    async def _check_kubeconfig(self, name: str) -> None:
        member = self.members.get(name)
        if member is None:
            return
        if name not in self.links and name not in self._kubeconfigs:
            # No link and nothing read: the Secret was unreadable; try to connect again.
            await self._connect(member)
            return
        kubeconfig = await self._read_kubeconfig(member)
        if kubeconfig == self._kubeconfigs.get(name):
            return
        rotated = name in self.links
        logger.info("member %s: its kubeconfig changed; connecting with the new one", name)
        await self._connect(member)
        if not rotated or name not in self.links:
            return
        metrics.MEMBER_KUBECONFIG_RELOADS.labels(name).inc()
        await self.runtime.hub.event(
            {
                "apiVersion": API_VERSION,
                "kind": "MemberCluster",
                "metadata": {"name": name, "uid": member.metadata.uid},
            },
            reason=MemberReason.KUBECONFIG_RELOADED,
            message=f"The kubeconfig in {_secret_source(member)} changed: the operator "
            "reconnected with the new one.",
        )

    def _notice_refused_credentials(self) -> None:
        """Members whose credentials are refused take no jobs; they do again once accepted."""
        for name, link in list(self.links.items()):
            refused = link.credentials_refused is not None
            if refused == (name in self._refused):
                continue
            if refused:
                self._refused.add(name)
                logger.warning("member %s refuses the hub's credentials", name)
            else:
                self._refused.discard(name)
            self._refresh_cluster(name)
            self.kick()
        self._refused.intersection_update(self.links)

    def _nodes_synced(self, cluster: str, nodes: list[dict[str, Any]], resource: str) -> None:
        infos = [node_from_k8s(n, gpu_resource=resource) for n in nodes]
        for info in infos:
            self._remember_pin(cluster, info)
        self.index.sync_nodes(cluster, infos)
        self.kick()

    def _node(self, cluster: str, kind: str, node: dict[str, Any], resource: str) -> None:
        if kind == "DELETED":
            self.index.delete_node(cluster, node["metadata"]["name"])
        else:
            info = node_from_k8s(node, gpu_resource=resource)
            self._remember_pin(cluster, info)
            self.index.upsert_node(cluster, info)
        self.kick()

    def _remember_pin(self, cluster: str, info: NodeInfo) -> None:
        if info.model:
            key = (cluster, info.model)
            pin = self._pins.get(key, ModelPin())
            self._pins[key] = pin.with_node(info.model_label, info.product)

    def _pods_synced(self, cluster: str, pods: list[dict[str, Any]], resource: str) -> None:
        self.index.sync_pods(cluster, [pod_from_k8s(p, gpu_resource=resource) for p in pods])
        self.kick()

    def _pod(self, cluster: str, kind: str, pod: dict[str, Any], resource: str) -> None:
        if kind == "DELETED":
            self.index.delete_pod(cluster, pod["metadata"]["uid"])
            self.kick()
            return
        info = pod_from_k8s(pod, gpu_resource=resource)
        self.index.upsert_pod(cluster, info)
        if info.terminal:
            self.kick()
        if info.job and _unschedulable(pod):
            self._unschedulable_since.setdefault(info.job, time.monotonic())

    def _on_reachability(self, cluster: str, reachable: bool, message: str) -> None:
        if self.reachable.get(cluster) == reachable:
            return
        self.reachable[cluster] = reachable
        logger.info(
            "member %s is %s: %s", cluster, "reachable" if reachable else "unreachable", message
        )
        self._refresh_cluster(cluster)
        if reachable:
            self._lost_since.pop(cluster, None)
            self.kick()
        else:
            self._lost_since.setdefault(cluster, _now())
            self._spawn(self._after_grace(cluster))

    async def _after_grace(self, cluster: str) -> None:
        """Once a member has been gone for the grace period, move its running jobs."""
        await asyncio.sleep(self.runtime.options.member_grace_seconds)
        lost = self._lost_since.get(cluster)
        if lost is None or self.reachable.get(cluster, False):
            return
        stranded = [
            tracked
            for tracked in self.jobs.values()
            if tracked.dispatched_to == cluster and not tracked.finished
        ]
        logger.info(
            "member %s unreachable since %s: moving its %d job(s)",
            cluster,
            _stamp(lost),
            len(stranded),
        )
        for tracked in stranded:
            await self._end_attempt(
                tracked,
                JobReason.MEMBER_LOST,
                f"member {cluster} stopped answering at {_stamp(lost)}",
                end=lost,
                charge_time=True,
            )

    def _on_telemetry(self, cluster: str, snapshot: Any) -> None:
        self.index.update_telemetry(cluster, snapshot)
        self.kick()

    # --- hub jobs -----------------------------------------------------------------------------

    def knows(self, uid: str) -> bool:
        """Whether the job is followed, or was finished and charged, by this process."""
        return uid in self.jobs or uid in self._finished

    async def job_seen(self, job: ComputeJob, *, unwritten: bool = False) -> None:
        """A ComputeJob was admitted (or found at start-up): queue it, or keep following it.

        ``unwritten``: its status holds the admission record, not written yet.
        """
        status = job.status
        if status.phase in (JobPhase.REJECTED,) or status.charged_cost is not None:
            return
        tracked = self._track(job, written=not unwritten)
        self.jobs[tracked.key] = tracked
        if unwritten:
            self._spawn(self._write_soon(tracked))
        if status.cluster and status.remote_ref is not None:
            await self._reattach(tracked)
        else:
            self.queue.push(tracked.request)
            self.kick()

    def _track(self, job: ComputeJob, *, written: bool = True) -> TrackedJob:
        """What the dispatcher keeps of ``job``: its request, its status, identity and spec."""
        status = job.status
        voucher = self.runtime.vouchers.get(job.metadata.namespace or "", status.voucher or "")
        request = JobRequest.from_computejob(
            job, voucher.voucher if voucher else None, key=job.metadata.uid or ""
        )
        dumped = status.model_dump(mode="json", by_alias=True, exclude_none=True)
        return TrackedJob.of(job, request, dumped, written=written)

    async def _reattach(self, tracked: TrackedJob) -> None:
        """After a restart: the job was placed; make sure its remote Job exists and follow it."""
        cluster = tracked.dispatched_to or ""
        link = self.links.get(cluster)
        if link is None:
            return  # the member's link will report its jobs once connected (jobs_synced)
        ref = tracked.status.get("remoteRef") or {}
        remote = await link.get_job(ref.get("namespace", ""), ref.get("name", ""))
        if remote is None:
            # Placed by an earlier life of the operator, its remote Job not yet created: hold
            # its GPUs in the index again until its pods show, so no other job takes them.
            attempts = tracked.status.get("attempts") or [{}]
            model = attempts[-1].get("gpuModel")
            request = tracked.request
            allocation = (
                self.index.allocate(cluster, model, request.replicas, request.gpus_per_replica)
                if model
                else None
            )
            if allocation:
                with contextlib.suppress(OverPlacementError, ValueError):
                    self.index.assume(tracked.key, cluster, allocation)
            await self._create_remote(tracked, link)
        else:
            await self._follow(tracked, remote)

    async def job_deleted(self, job: ComputeJob) -> None:
        """The finalizer: stop the remote Job and charge what every attempt used."""
        uid = job.metadata.uid or ""
        self._finished.discard(uid)
        self.queue.remove(uid)
        self.index.forget(uid)
        self._unschedulable_since.pop(uid, None)
        self._forget_waiting(uid)
        tracked = self.jobs.pop(uid, None)
        if tracked is None:
            if job.status.charged_cost is not None or not job.status.cluster:
                self.kick()
                return  # finished and charged, or never placed: nothing runs for it
            # Placed by an earlier life of the operator and deleted before this one resumed it.
            tracked = self._track(job)
        status = tracked.status
        ref = status.get("remoteRef")
        cluster = tracked.dispatched_to
        if cluster and ref:
            link = self.links.get(cluster)
            remote = await link.get_job(ref["namespace"], ref["name"]) if link else None
            if link is not None:
                await link.delete_job(ref["namespace"], ref["name"])
            started = (remote or {}).get("status", {}).get("startTime")
            if started:
                self._close_attempt(
                    tracked, parse_timestamp(started), _now(), JobReason.DELETED, "deleted"
                )
        charges = [parse_money(a.get("charge") or "0") for a in status.get("attempts") or []]
        if any(charges):
            await self._settle_ledger(
                tracked.identity, status.get("voucher"), sum(charges, Decimal(0))
            )
        self.kick()

    async def _settle_ledger(
        self, identity: JobIdentity, voucher: str | None, charge: Decimal
    ) -> None:
        writer = self.runtime.ledger_writer(identity.namespace, voucher or "")
        key = identity.ledger_key

        def settle(ledger: Any) -> Any:
            entry = ledger.entries.get(key)
            if entry is None or entry.state is not EntryState.RESERVED:
                return ledger  # charged or released already: exactly once
            return ledger.settle(key, charge)

        try:
            await writer.change(settle)
        except NotReservedError:
            logger.info("job %s had nothing reserved to settle", key)
        except VoucherGoneError:
            # Deleted with its namespace, say: there is no ledger left to charge.
            logger.warning("job %s: its voucher is gone; the charge is not recorded", key)

    # --- placement ------------------------------------------------------------------------

    async def _dispatch(self, placed: Placed) -> None:
        tracked = self.jobs.get(placed.job.key)
        choice = placed.decision.choice
        if tracked is None or choice is None:
            self.index.forget(placed.job.key)
            return
        member = self.members.get(choice.cluster)
        link = self.links.get(choice.cluster)
        if member is None or link is None:
            self.index.forget(placed.job.key)
            self.queue.push(tracked.request)
            return
        self._forget_waiting(tracked.key)  # should it wait again, that is news again
        job = tracked.model()
        now = _now()
        before = tracked.status
        status = tracked.status = dict(before)  # every key below is replaced, never edited
        attempts = list(status.get("attempts") or [])
        attempts.append(
            Attempt(
                cluster=choice.cluster,
                gpu_model=choice.model,
                price_per_gpu_hour=choice.price_per_gpu_hour,
                start_time=now,
            ).model_dump(mode="json", by_alias=True, exclude_none=True)
        )
        ref = RemoteObjectReference(
            api_version="batch/v1",
            kind="Job",
            namespace=remote_namespace(job),
            name=remote_name(job),
        )
        status.update(
            phase=JobPhase.DISPATCHED.value,
            cluster=choice.cluster,
            remoteRef=ref.model_dump(mode="json", by_alias=True, exclude_none=True),
            attempts=attempts,
        )
        self._condition(
            tracked, JobConditionType.DISPATCHED, True, JobReason.PLACED, placed.decision.summary
        )
        # The choice is recorded before the remote Job exists: a crash between the two is
        # repaired on restart by creating it (idempotently), never by choosing again.
        try:
            await self._write_status(tracked)
        except Exception as error:
            # Nothing was recorded, so nothing runs: undo the choice and place it again on a
            # later pass (not at once, which would spin while the hub does not answer).
            logger.warning("recording where %s goes failed: %s", tracked.request.name, error)
            tracked.status = before
            self.index.forget(tracked.key)
            if self.jobs.get(tracked.key) is tracked:
                self.queue.push(tracked.request)
            return
        created = job.metadata.creation_timestamp
        if created is not None and len(attempts) == 1:
            metrics.DISPATCH_SECONDS.observe(max(0.0, (now - created).total_seconds()))
        if self.jobs.get(tracked.key) is not tracked:
            return  # deleted meanwhile: its finalizer has run, so nothing may start it now
        logger.info(
            "dispatching %s/%s: %s",
            job.metadata.namespace,
            job.metadata.name,
            placed.decision.summary,
        )
        await self.runtime.hub.event(
            self._body(tracked), reason=JobReason.PLACED, message=placed.decision.summary
        )
        await self._create_remote(tracked, link, job)

    async def _create_remote(
        self, tracked: TrackedJob, link: MemberLink, job: ComputeJob | None = None
    ) -> None:
        """Create the job's remote Job; ``job``: its model, when the caller has built it."""
        job = job or tracked.model()
        member = self.members[tracked.dispatched_to or ""]
        attempt = (tracked.status.get("attempts") or [{}])[-1]
        pin = self._pin_for(tracked.dispatched_to or "", attempt.get("gpuModel"))
        try:
            level = member.spec.pod_security_level
            await link.ensure_namespace(remote_namespace_object(job, level))
            await link.create_job(remote_job(job, member.spec.gpu_resource_name, pin))
        except Exception as error:
            logger.warning("creating the remote Job of %s failed: %s", tracked.request.name, error)
            self.index.forget(tracked.key)
            message = f"creating the workload on {tracked.dispatched_to} failed: {error}"
            # null removes the fields in a merge patch
            tracked.status["cluster"] = None
            tracked.status["remoteRef"] = None
            tracked.status["phase"] = JobPhase.QUEUED.value
            self._condition(
                tracked,
                JobConditionType.DISPATCHED,
                False,
                JobReason.REMOTE_CREATE_FAILED,
                message,
            )
            await self._write_status(tracked)
            self.queue.push(tracked.request)

    def _pin_for(self, cluster: str, model: str | None) -> ModelPin | None:
        """The labels of ``model``'s nodes on ``cluster``, to pin the pods to that model."""
        return self._pins.get((cluster, model)) if model else None

    def _forget_waiting(self, key: str) -> None:
        self._waiting_reasons.pop(key, None)
        self._waiting_due.pop(key, None)

    async def _mark_waiting(self, key: str) -> None:
        try:
            due = self._waiting_due.pop(key, None)
            tracked = self.jobs.get(key)
            if due is None or tracked is None or key not in self.queue:
                return  # said already, gone, or placed while this waited for a write slot
            reason, summary = due
            self._waiting_reasons[key] = summary
            tracked.status["phase"] = JobPhase.QUEUED.value
            self._condition(tracked, JobConditionType.DISPATCHED, False, reason, summary)
            try:
                await self._write_status(tracked)
            except Exception:
                self._waiting_reasons.pop(key, None)  # said again on the next pass
                raise
        finally:
            self._marking.discard(key)

    # --- follow-up --------------------------------------------------------------------------

    def _jobs_synced(self, cluster: str, remotes: list[dict[str, Any]]) -> None:
        self.kick()  # this may have been the last watch the dispatcher waited for
        for remote in remotes:
            self._job_event(cluster, "ADDED", remote)
        # Jobs placed on this member whose remote Job is missing: create it (after restart).
        present = {r["metadata"]["labels"].get(JOB_UID_LABEL) for r in remotes}
        for tracked in list(self.jobs.values()):
            missing = tracked.key not in present and cluster in self.links
            if tracked.dispatched_to == cluster and not tracked.finished and missing:
                self._spawn(self._create_remote(tracked, self.links[cluster]))

    def _job_event(self, cluster: str, kind: str, remote: dict[str, Any]) -> None:
        uid = (remote.get("metadata", {}).get("labels") or {}).get(JOB_UID_LABEL) or ""
        if kind == "DELETED":
            return
        if cluster in self._stale_copies.get(uid, ()):
            self._spawn(self._remove_stale_copy(uid, cluster, remote))
            return
        tracked = self.jobs.get(uid)
        if tracked is None or tracked.dispatched_to != cluster:
            return
        self._spawn(self._follow(tracked, remote))

    async def _remove_stale_copy(self, uid: str, cluster: str, remote: dict[str, Any]) -> None:
        link = self.links.get(cluster)
        if link is None:
            return
        metadata = remote["metadata"]
        await link.delete_job(metadata["namespace"], metadata["name"])
        logger.info("removed the stale copy of job %s on %s", uid, cluster)
        clusters = self._stale_copies.get(uid, set())
        clusters.discard(cluster)
        if not clusters:
            self._stale_copies.pop(uid, None)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self.runtime.spawn(coroutine)

    async def _follow(self, tracked: TrackedJob, remote: dict[str, Any]) -> None:
        """Mirror the remote Job's progress; charge once it has ended."""
        if tracked.finished:
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
        started = remote_status.get("startTime")
        if ended is not None:
            await self._finish(tracked, remote_status, ended)
            return
        # Ready pods, not active ones: a Pending pod is active. (Job controllers before
        # Kubernetes 1.24 do not count ready pods; there, active is the best there is.)
        counted = "ready" if "ready" in remote_status else "active"
        running = int(remote_status.get(counted) or 0)
        if running >= tracked.request.replicas:
            self._unschedulable_since.pop(tracked.key, None)
        if running >= tracked.request.replicas and tracked.status.get("phase") != "Running":
            tracked.status["phase"] = JobPhase.RUNNING.value
            tracked.status.setdefault("startTime", started or _stamp(_now()))
            self._condition(
                tracked,
                JobConditionType.RUNNING,
                True,
                JobReason.PODS_RUNNING,
                f"all {tracked.request.replicas} replica(s) run on {tracked.dispatched_to}",
            )
            await self._write_status(tracked)

    async def _finish(
        self, tracked: TrackedJob, remote_status: dict[str, Any], ended: dict[str, Any]
    ) -> None:
        succeeded = ended.get("type") == "Complete"
        end = parse_timestamp(
            remote_status.get("completionTime") or ended.get("lastTransitionTime") or _stamp(_now())
        )
        start = parse_timestamp(remote_status.get("startTime") or _stamp(end))
        reason = JobReason.SUCCEEDED if succeeded else JobReason.FAILED
        if not succeeded and ended.get("reason") == "DeadlineExceeded":
            reason = JobReason.DEADLINE_EXCEEDED
        used, charge, price = self._close_attempt(tracked, start, end, reason, "")
        message = (
            f"{'Succeeded' if succeeded else 'Failed'} on {tracked.dispatched_to}: "
            f"{used} GPU-seconds at {format_money(price)}/GPU-hour, charged "
            f"{format_money(charge)}"
        )
        await self._close(tracked, succeeded, reason, message, end=end, start=start)

    def _close_attempt(
        self, tracked: TrackedJob, start: datetime, end: datetime, reason: str, message: str
    ) -> tuple[int, Decimal, Decimal]:
        """End the current attempt in status with its GPU time and charge."""
        attempts = list(tracked.status.get("attempts") or [])
        attempt = dict(attempts[-1]) if attempts else {}
        price = parse_money(attempt.get("pricePerGPUHour", "0"))
        used = gpu_seconds(start, end, tracked.request.total_gpus)
        charge = charge_for(used, price)
        attempt.update(
            endTime=_stamp(end), reason=str(reason), gpuSeconds=used, charge=format_money(charge)
        )
        if message:
            attempt["message"] = message[:1024]
        if attempts:
            attempts[-1] = attempt
        tracked.status["attempts"] = attempts
        return used, charge, price

    async def _close(
        self,
        tracked: TrackedJob,
        succeeded: bool,
        reason: str,
        message: str,
        *,
        end: datetime,
        start: datetime | None = None,
    ) -> None:
        """The job is over: charge every attempt's use once, release the rest, say so."""
        tracked.finished = True
        attempts = tracked.status.get("attempts") or []
        total_seconds = sum(int(a.get("gpuSeconds") or 0) for a in attempts)
        total_charge = sum((parse_money(a.get("charge") or "0") for a in attempts), Decimal(0))
        # Voucher first (idempotent: a second settle of the same job changes nothing), then
        # the job's status with the charge and a zero reservation in one write.
        await self._settle_ledger(tracked.identity, tracked.status.get("voucher"), total_charge)
        tracked.status.update(
            phase=(JobPhase.SUCCEEDED if succeeded else JobPhase.FAILED).value,
            gpuSeconds=total_seconds,
            chargedCost=format_money(total_charge),
            reservation="0.00",
            completionTime=_stamp(end),
        )
        if start is not None:
            tracked.status.setdefault("startTime", _stamp(start))
        message = (
            f"{message}; in all {format_money(total_charge)} over {len(attempts)} "
            "attempt(s), and the rest of the reservation is released."
        )
        self._condition(tracked, JobConditionType.RUNNING, False, reason, message)
        self._condition(tracked, JobConditionType.FINISHED, True, reason, message)
        self._condition(
            tracked,
            JobConditionType.RESERVED,
            False,
            JobReason.RESERVATION_RELEASED,
            "The reservation was settled.",
        )
        self._condition(tracked, JobConditionType.CHARGED, True, JobReason.CHARGE_RECORDED, message)
        await self._write_status(tracked)
        await self.runtime.hub.event(
            self._body(tracked), reason=reason, message=message, warning=not succeeded
        )
        self._unschedulable_since.pop(tracked.key, None)
        self._forget_waiting(tracked.key)
        # Finished jobs are not kept, their status holds everything; only their uid is, until
        # they are deleted, so a late echo of an earlier write cannot start them again.
        self.jobs.pop(tracked.key, None)
        self._finished.add(tracked.key)
        self.kick()

    async def _end_attempt(
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
        attempts = tracked.status.get("attempts") or [{}]
        started = parse_timestamp(attempts[-1].get("startTime") or _stamp(end))
        self._close_attempt(tracked, started, end if charge_time else started, reason, message)
        self._stale_copies.setdefault(tracked.key, set()).add(cluster)
        self.index.forget(tracked.key)
        self._unschedulable_since.pop(tracked.key, None)
        if len(tracked.status["attempts"]) >= self.runtime.options.max_attempts:
            await self._close(
                tracked,
                False,
                reason,
                f"Failed: gave up after {len(tracked.status['attempts'])} attempts; the last "
                f"ended because {message}",
                end=end,
            )
            return
        if reason is JobReason.WITHDRAWN_UNSCHEDULABLE:
            # Our view said it fits there and the member's scheduler disagrees: until the two
            # agree, the job goes elsewhere.
            tracked.request = _excluding(tracked.request, cluster, self.members)
        tracked.status.update(phase=JobPhase.QUEUED.value, cluster=None, remoteRef=None)
        text = f"{message}; the job is placed again (attempt {len(attempts) + 1})."
        self._condition(tracked, JobConditionType.RUNNING, False, reason, text)
        self._condition(tracked, JobConditionType.DISPATCHED, False, reason, text)
        await self._write_status(tracked)
        await self.runtime.hub.event(self._body(tracked), reason=reason, message=text, warning=True)
        self.queue.push(tracked.request)
        self.kick()

    async def _watchdog(self) -> None:
        """Every second: a pass if jobs wait; move jobs whose pods stay unschedulable (the
        member's state and ours disagree)."""
        while True:
            await asyncio.sleep(1.0)
            try:
                self._notice_refused_credentials()
            except Exception:  # the watchdog's other duties must go on
                logger.exception("noticing refused member credentials failed")
            if len(self.queue):
                # A pass a second while jobs wait, whatever else happens: a job put back after
                # a failed write, or capacity freed by an event that kicked nothing, is then
                # placed within a second rather than at the next unrelated event.
                self.kick()
            limit = self.runtime.options.unschedulable_seconds
            now = time.monotonic()
            for uid, since in list(self._unschedulable_since.items()):
                tracked = self.jobs.get(uid)
                if tracked is None or tracked.finished or not tracked.dispatched_to:
                    self._unschedulable_since.pop(uid, None)
                    continue
                if now - since < limit:
                    continue
                cluster = tracked.dispatched_to
                link = self.links.get(cluster)
                ref = tracked.status.get("remoteRef") or {}
                if link is not None and ref:
                    await link.delete_job(ref["namespace"], ref["name"])
                await self._end_attempt(
                    tracked,
                    JobReason.WITHDRAWN_UNSCHEDULABLE,
                    f"its pods stayed unschedulable on {cluster} for {limit:.0f}s",
                    end=_now(),
                    charge_time=False,
                )

    # --- status -------------------------------------------------------------------------------

    def _condition(
        self,
        tracked: TrackedJob,
        kind: JobConditionType,
        true: bool,
        reason: str,
        message: str,
    ) -> None:
        conditions = [Condition.model_validate(c) for c in tracked.status.get("conditions", [])]
        set_condition(
            conditions,
            kind,
            ConditionStatus.TRUE if true else ConditionStatus.FALSE,
            reason,
            message[:32768],
            now=_now(),
            observed_generation=tracked.identity.generation,
        )
        tracked.status["conditions"] = [
            c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions
        ]

    async def _write_status(self, tracked: TrackedJob) -> None:
        identity = tracked.identity
        async with tracked.write_lock:
            await self.runtime.hub.patch_status(
                PLURAL, identity.namespace, identity.name, {"status": tracked.status}
            )
            tracked.written = True

    async def _write_soon(self, tracked: TrackedJob) -> None:
        """Write a new job's status if no dispatch write has carried it within the grace.

        A job placed meanwhile is left to its placement's write, which carries the record:
        under load its write slot can take longer than the grace, and writing the record alone
        then was one more status write per job on the busiest API server.
        """
        while True:
            await asyncio.sleep(UNWRITTEN_GRACE_SECONDS)
            if tracked.written or self.jobs.get(tracked.key) is not tracked:
                return
            if tracked.key in self.queue:  # not placed: nothing else will write it soon
                await self._write_status(tracked)
                return

    def _body(self, tracked: TrackedJob) -> dict[str, Any]:
        identity = tracked.identity
        return {
            "apiVersion": API_VERSION,
            "kind": "ComputeJob",
            "metadata": {
                "name": identity.name,
                "namespace": identity.namespace,
                "uid": identity.uid,
            },
        }


async def _bounded(slots: asyncio.Semaphore, coroutine: Coroutine[Any, Any, None]) -> None:
    """Await ``coroutine`` once one of ``slots`` is free; a failure is logged, not raised."""
    async with slots:
        try:
            await coroutine
        except Exception:
            logger.exception("dispatching a job failed")


def _secret_source(member: MemberCluster) -> str:
    """Where a member's kubeconfig comes from, for messages: ``Secret ns/name (key k)``."""
    reference = member.spec.kubeconfig_secret_ref
    return f"Secret {reference.namespace}/{reference.name} (key {reference.key})"


def _unschedulable(pod: dict[str, Any]) -> bool:
    """Pending, and the scheduler said it fits nowhere."""
    status = pod.get("status") or {}
    if status.get("phase") != "Pending":
        return False
    return any(
        c.get("type") == "PodScheduled"
        and c.get("status") == "False"
        and c.get("reason") == "Unschedulable"
        for c in status.get("conditions") or []
    )


def _excluding(request: JobRequest, cluster: str, members: dict[str, MemberCluster]) -> JobRequest:
    """``request`` with ``cluster`` taken out of the clusters it may run on."""
    allowed = request.clusters or frozenset(members)
    remaining = allowed - {cluster}
    # An empty set would mean "anywhere"; with nowhere else to go, it stays where it may run.
    return dataclasses.replace(request, clusters=remaining) if remaining else request
