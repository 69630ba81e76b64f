"""The capacity index: free GPUs per member cluster, model and node, kept up to date by events.

Free GPUs on a node
    ``free = allocatable - requested - busy_untracked - unhealthy - assumed``, never below 0,
    and 0 on a node that takes no new pods (see :mod:`suanli.dispatch.kube`), where

    - ``allocatable`` is the kubelet's offer of the member's GPU resource;
    - ``requested`` is the sum of the GPU requests of pods bound to the node and not finished;
    - ``busy_untracked = max(0, busy - requested)``: ``busy`` counts the node's healthy GPUs
      the telemetry shows in use (utilization at or above :attr:`BusyRule.utilization_percent`
      or framebuffer use at or above :attr:`BusyRule.memory_used_mib`). Kubernetes' pods are
      assumed to sit on busy GPUs first, so only the excess is use that Kubernetes does not
      account for (a process started outside any pod, a pod of another scheduler);
    - ``unhealthy`` counts GPUs with an XID error or uncorrectable ECC errors; they get no new
      work whether or not a pod holds them (counting a held one twice errs on the safe side);
    - ``assumed`` is GPUs promised to dispatched jobs whose pods are not yet bound (below).

    The three telemetry terms apply only while the node's telemetry is fresh (read less than
    ``telemetry_max_age`` seconds ago, by the exporter's own timestamp). When it goes stale,
    the node falls back to Kubernetes' view (they count as 0) and :class:`ModelCapacity`
    reports how many nodes that concerns, so a decision can say so. A node without a product
    label takes its model from its telemetry.

The assume cache
    Like the kube-scheduler's, it closes the gap between a decision and its visible effect.
    :meth:`CapacityIndex.assume` records a job's per-node allocation in a cluster and refuses
    one that does not fit (:class:`OverPlacementError`): that check is what makes
    over-placement impossible, however many decisions race. The assumption then shrinks as
    the job's pods appear bound in the member (matched by :attr:`PodInfo.job`): each newly seen
    bound pod takes its GPUs off the assumption on its own node first, then off the others,
    since the member's scheduler may bind elsewhere than predicted. It disappears when fully
    observed, when :meth:`~CapacityIndex.forget` is called (job withdrawn, remote create
    failed, job deleted), or ``assume_ttl`` seconds after the last sign of life: a pod of the
    job seen still unbound renews it.

Events and cost
    Updates come as events, as watches deliver them: cluster, node and pod upserts and deletes,
    telemetry snapshots. Each costs O(1) for the node it touches (a snapshot, O(its GPUs)).
    Per cluster and model the index keeps aggregates, among them histograms of free and
    allocatable GPUs per node, so the policy answers "how many replicas of g GPUs fit here"
    from at most a few dozen histogram buckets and scans nodes only in the cluster it picks.
    Time-driven changes (telemetry going stale, assumptions expiring) are applied lazily from
    two heaps at the start of each call.

Concurrency
    The index is meant for one asyncio event loop. Every method is synchronous and never
    awaits, so each call is atomic with respect to the loop's other tasks and no locks are
    needed; a decide-then-assume sequence must simply not await in between (if it does,
    :meth:`~CapacityIndex.assume` re-checks and refuses). Do not call it from other threads:
    kopf runs synchronous handlers in a thread pool, so the handlers that use it must be
    ``async def``. The index checks this and raises :class:`RuntimeError` from a second thread.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from suanli.api.catalogue import DEFAULT_CATALOGUE
from suanli.api.gpu_models import canonical_model
from suanli.dispatch.models import ClusterInfo, NodeInfo, PodInfo
from suanli.telemetry.parse import DEFAULT_MAX_AGE, GpuTelemetry, TelemetrySnapshot

DEFAULT_ASSUME_TTL: Final = 300.0


class OverPlacementError(Exception):
    """An assumption asked for more GPUs than a node has free; nothing was recorded."""


@dataclass(frozen=True)
class BusyRule:
    """When telemetry counts a GPU as in use."""

    utilization_percent: float = 10.0
    """At or above this SM utilization, in percent."""
    memory_used_mib: float = 1024.0
    """At or above this framebuffer use, in MiB: above what a driver and an idle context hold."""

    def busy(self, gpu: GpuTelemetry) -> bool:
        util = gpu.utilization_percent
        used = gpu.fb_used_mib
        return (util is not None and util >= self.utilization_percent) or (
            used is not None and used >= self.memory_used_mib
        )


@dataclass(frozen=True)
class NodeCapacity:
    """One node's GPU accounting at a moment."""

    cluster: str
    name: str
    model: str | None
    present: bool
    schedulable: bool
    allocatable: int
    requested: int
    assumed: int
    telemetry_fresh: bool
    busy: int
    busy_untracked: int
    unhealthy: int
    free: int


@dataclass(frozen=True)
class ModelCapacity:
    """The GPUs of one model in one member cluster."""

    cluster: str
    model: str
    nodes: int
    """Nodes with GPUs of this model, schedulable or not."""
    schedulable_nodes: int
    fresh_nodes: int
    """Nodes whose telemetry is fresh; the others are judged by Kubernetes' view alone."""
    total: int
    allocatable: int
    """On schedulable nodes."""
    free: int
    busy: int
    busy_untracked: int
    unhealthy: int
    utilization_percent: float | None
    free_histogram: tuple[tuple[int, int], ...]
    """(free GPUs on a node, number of such nodes), nodes with none free left out."""
    allocatable_histogram: tuple[tuple[int, int], ...]
    """(allocatable GPUs on a schedulable node, number of such nodes)."""
    total_histogram: tuple[tuple[int, int], ...] = ()
    """(GPUs installed on a node, number of such nodes), every node of the model, schedulable
    or not: the largest gang the member could ever run."""
    _fits_now: dict[int, int] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    _fits_ever: dict[int, int] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    """Answers of the two ``replicas_that_*`` questions so far: a read-out is shared by every
    decision until its cluster changes, and they ask for the same few replica sizes."""

    @property
    def max_free_on_node(self) -> int:
        return max((size for size, _ in self.free_histogram), default=0)

    @property
    def max_allocatable_on_node(self) -> int:
        return max((size for size, _ in self.allocatable_histogram), default=0)

    @property
    def telemetry_fresh(self) -> bool:
        return self.fresh_nodes == self.nodes

    def replicas_that_fit(self, gpus_per_replica: int) -> int:
        """How many replicas of ``gpus_per_replica`` GPUs fit on the free GPUs now.

        Replicas of a gang are all the same size, so the best packing is simply each node
        holding as many as fit on it: no bin-packing search is needed.
        """
        count = self._fits_now.get(gpus_per_replica)
        if count is None:
            count = self._fits_now[gpus_per_replica] = _pack(self.free_histogram, gpus_per_replica)
        return count

    def replicas_that_could_ever_fit(self, gpus_per_replica: int) -> int:
        """How many would fit if every schedulable GPU of the model were free."""
        count = self._fits_ever.get(gpus_per_replica)
        if count is None:
            count = self._fits_ever[gpus_per_replica] = _pack(
                self.allocatable_histogram, gpus_per_replica
            )
        return count


def _pack(histogram: tuple[tuple[int, int], ...], gpus_per_replica: int) -> int:
    return sum(nodes * (size // gpus_per_replica) for size, nodes in histogram)


@dataclass(frozen=True)
class Assumption:
    """GPUs promised to a dispatched job whose pods are not all bound yet."""

    job: str
    cluster: str
    allocations: Mapping[str, int]
    """GPUs per node still assumed."""
    expires_at: float


# --- internal state -----------------------------------------------------------------------------


class _Share(NamedTuple):
    """What one node contributes to its cluster's aggregates of one model."""

    model: str
    total: int
    allocatable: int  # 0 unless schedulable
    free: int
    fresh: bool
    busy: int
    untracked: int
    unhealthy: int
    util_sum: float
    util_count: int


class _Telemetry:
    """A node's last telemetry, reduced to counts. Mutated in place so heap flags stay true."""

    __slots__ = (
        "busy",
        "data_at",
        "fresh",
        "model",
        "queued",
        "stale_at",
        "unhealthy",
        "util_count",
        "util_sum",
    )

    def __init__(self) -> None:
        self.model: str | None = None
        self.busy = 0
        self.unhealthy = 0
        self.util_sum = 0.0
        self.util_count = 0
        self.data_at = float("-inf")
        self.stale_at = float("-inf")
        self.fresh = False
        self.queued = False  # an entry for this node is on the staleness heap


class _Node:
    __slots__ = (
        "allocatable",
        "assumed",
        "model",
        "name",
        "present",
        "requested",
        "schedulable",
        "share",
        "telemetry",
        "total",
        "whole_gpus",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.present = False  # a Node object exists; pods or telemetry may name it before
        self.model: str | None = None
        self.whole_gpus = True
        self.allocatable = 0
        self.total = 0
        self.schedulable = False
        self.requested = 0
        self.assumed = 0
        self.telemetry: _Telemetry | None = None
        self.share: _Share | None = None

    def idle(self) -> bool:
        """Nothing refers to the node any more: its entry can go."""
        return (
            not self.present
            and self.requested == 0
            and self.assumed == 0
            and self.telemetry is None
        )


def _bump(histogram: dict[int, int], key: int, delta: int) -> None:
    count = histogram.get(key, 0) + delta
    if count:
        histogram[key] = count
    else:
        del histogram[key]


class _ModelAggregate:
    __slots__ = (
        "allocatable",
        "allocatable_histogram",
        "busy",
        "free",
        "free_histogram",
        "fresh_nodes",
        "members",
        "schedulable_nodes",
        "total",
        "total_histogram",
        "unhealthy",
        "untracked",
        "util_count",
        "util_sum",
        "view",
    )

    def __init__(self) -> None:
        self.members: dict[str, _Node] = {}
        self.schedulable_nodes = 0
        self.fresh_nodes = 0
        self.total = 0
        self.allocatable = 0
        self.free = 0
        self.busy = 0
        self.untracked = 0
        self.unhealthy = 0
        self.util_sum = 0.0
        self.util_count = 0
        self.free_histogram: dict[int, int] = {}
        self.allocatable_histogram: dict[int, int] = {}
        self.total_histogram: dict[int, int] = {}
        self.view: ModelCapacity | None = None

    def apply(self, node: _Node, share: _Share, sign: int) -> None:
        self.view = None
        if sign > 0:
            self.members[node.name] = node
        else:
            del self.members[node.name]
        if share.allocatable:
            self.schedulable_nodes += sign
            _bump(self.allocatable_histogram, share.allocatable, sign)
        if share.free:
            _bump(self.free_histogram, share.free, sign)
        if share.total:
            _bump(self.total_histogram, share.total, sign)
        if share.fresh:
            self.fresh_nodes += sign
        self.total += sign * share.total
        self.allocatable += sign * share.allocatable
        self.free += sign * share.free
        self.busy += sign * share.busy
        self.untracked += sign * share.untracked
        self.unhealthy += sign * share.unhealthy
        self.util_sum += sign * share.util_sum
        self.util_count += sign * share.util_count

    def snapshot(self, cluster: str, model: str) -> ModelCapacity:
        if self.view is None:
            self.view = ModelCapacity(
                cluster=cluster,
                model=model,
                nodes=len(self.members),
                schedulable_nodes=self.schedulable_nodes,
                fresh_nodes=self.fresh_nodes,
                total=self.total,
                allocatable=self.allocatable,
                free=self.free,
                busy=self.busy,
                busy_untracked=self.untracked,
                unhealthy=self.unhealthy,
                utilization_percent=(
                    round(self.util_sum / self.util_count, 1) if self.util_count else None
                ),
                free_histogram=tuple(sorted(self.free_histogram.items())),
                allocatable_histogram=tuple(sorted(self.allocatable_histogram.items())),
                total_histogram=tuple(sorted(self.total_histogram.items())),
            )
        return self.view


class _Cluster:
    __slots__ = ("info", "models", "name", "nodes", "pods", "views")

    def __init__(self, name: str) -> None:
        self.name = name
        self.info: ClusterInfo | None = None
        self.nodes: dict[str, _Node] = {}
        # Only pods that hold GPUs now: uid -> (node, GPUs).
        self.pods: dict[str, tuple[str, int]] = {}
        self.models: dict[str, _ModelAggregate] = {}
        # The read-out of every model, rebuilt on the first read after a change.
        self.views: dict[str, ModelCapacity] | None = None

    def model_views(self) -> dict[str, ModelCapacity]:
        views = self.views
        if views is None:
            views = self.views = {m: a.snapshot(self.name, m) for m, a in self.models.items()}
        return views

    def node(self, name: str) -> _Node:
        node = self.nodes.get(name)
        if node is None:
            node = self.nodes[name] = _Node(name)
        return node


class _Assumed:
    __slots__ = ("cluster", "expires_at", "job", "original", "remaining", "seen")

    def __init__(
        self, job: str, cluster: str, allocations: dict[str, int], expires_at: float
    ) -> None:
        self.job = job
        self.cluster = cluster
        self.original = dict(allocations)
        self.remaining = dict(allocations)
        self.expires_at = expires_at
        self.seen: set[str] = set()  # pod uids already taken off the assumption


# --- the index ----------------------------------------------------------------------------------


class CapacityIndex:
    """Free GPUs of every member cluster, per model and node (see the module notes).

    Args:
        busy_rule: When telemetry counts a GPU as in use.
        telemetry_max_age: Seconds after which a node's telemetry is stale.
        assume_ttl: Seconds an assumption lives without a sign of its pods.
        clock: Epoch seconds (telemetry carries exporters' epoch timestamps).
    """

    def __init__(
        self,
        *,
        busy_rule: BusyRule | None = None,
        telemetry_max_age: float = DEFAULT_MAX_AGE,
        assume_ttl: float = DEFAULT_ASSUME_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.busy_rule = busy_rule or BusyRule()
        self.telemetry_max_age = telemetry_max_age
        self.assume_ttl = assume_ttl
        self._clock = clock
        self._clusters: dict[str, _Cluster] = {}
        self._assumed: dict[str, _Assumed] = {}
        self._stale_heap: list[tuple[float, int, str, str]] = []
        self._expiry_heap: list[tuple[float, int, _Assumed]] = []
        self._sequence = 0
        self._owner: int | None = None

    # --- clusters -------------------------------------------------------------------------------

    def upsert_cluster(self, info: ClusterInfo) -> None:
        """A MemberCluster was added or changed."""
        self._begin()
        self._cluster(info.name).info = info

    def delete_cluster(self, name: str) -> list[str]:
        """A MemberCluster was removed; returns the jobs whose assumptions went with it."""
        self._begin()
        if self._clusters.pop(name, None) is None:
            return []
        dropped = [job for job, a in self._assumed.items() if a.cluster == name]
        for job in dropped:
            del self._assumed[job]
        return dropped

    def cluster(self, name: str) -> ClusterInfo | None:
        state = self._clusters.get(name)
        return None if state is None else state.info

    def clusters(self) -> list[ClusterInfo]:
        """Every member cluster with known info, in the order they were added."""
        self._begin()
        return [state.info for state in self._clusters.values() if state.info is not None]

    # --- nodes ----------------------------------------------------------------------------------

    def upsert_node(self, cluster: str, node: NodeInfo) -> None:
        """A Node of ``cluster`` was added or changed."""
        self._begin()
        state = self._cluster(cluster)
        entry = state.node(node.name)
        entry.present = True
        entry.model = canonical_model(node.model) if node.model else None
        entry.whole_gpus = node.whole_gpus
        entry.allocatable = max(0, node.allocatable)
        entry.total = max(0, node.total)
        entry.schedulable = node.schedulable
        self._refresh(state, entry)

    def delete_node(self, cluster: str, name: str) -> None:
        self._begin()
        state = self._clusters.get(cluster)
        entry = None if state is None else state.nodes.get(name)
        if state is None or entry is None:
            return
        entry.present = False
        entry.telemetry = None  # a node that comes back under this name starts afresh
        self._refresh(state, entry)
        if entry.idle():
            del state.nodes[name]

    def sync_nodes(self, cluster: str, nodes: Iterable[NodeInfo]) -> None:
        """Replace the cluster's nodes with a full list (after a watch re-list)."""
        self._begin()
        listed = {node.name: node for node in nodes}
        state = self._cluster(cluster)
        for name in [n for n, e in state.nodes.items() if e.present and n not in listed]:
            self.delete_node(cluster, name)
        for node in listed.values():
            self.upsert_node(cluster, node)

    # --- pods -----------------------------------------------------------------------------------

    def upsert_pod(self, cluster: str, pod: PodInfo) -> None:
        """A Pod of ``cluster`` was added or changed."""
        now = self._begin()
        state = self._cluster(cluster)
        old = state.pods.get(pod.uid)
        new = (pod.node, pod.gpus) if pod.node is not None and pod.holds_gpus else None
        if old != new:
            if old is not None:
                self._add_requested(state, old[0], -old[1])
            if new is not None:
                state.pods[pod.uid] = new
                self._add_requested(state, new[0], new[1])
            else:
                del state.pods[pod.uid]
        if pod.job is not None:
            self._observe(state, pod, now)

    def delete_pod(self, cluster: str, uid: str) -> None:
        self._begin()
        state = self._clusters.get(cluster)
        old = None if state is None else state.pods.pop(uid, None)
        if state is not None and old is not None:
            self._add_requested(state, old[0], -old[1])

    def sync_pods(self, cluster: str, pods: Iterable[PodInfo]) -> None:
        """Replace the cluster's pods with a full list (after a watch re-list)."""
        self._begin()
        listed = {pod.uid: pod for pod in pods}
        state = self._cluster(cluster)
        for uid in [uid for uid in state.pods if uid not in listed]:
            self.delete_pod(cluster, uid)
        for pod in listed.values():
            self.upsert_pod(cluster, pod)

    # --- telemetry ------------------------------------------------------------------------------

    def update_telemetry(self, cluster: str, snapshot: TelemetrySnapshot) -> None:
        """A telemetry endpoint of ``cluster`` was read; updates the nodes it reports.

        Nodes the snapshot does not mention keep what they had, and it ages. A snapshot older
        than what a node already has is ignored for that node.
        """
        now = self._begin()
        state = self._cluster(cluster)
        stale_at = snapshot.data_at + self.telemetry_max_age
        for reported in snapshot.nodes:
            entry = state.node(reported.name)
            telemetry = entry.telemetry
            if telemetry is None:
                telemetry = entry.telemetry = _Telemetry()
            elif snapshot.data_at < telemetry.data_at:
                continue
            self._summarize(telemetry, reported.gpus)
            telemetry.data_at = snapshot.data_at
            telemetry.stale_at = stale_at
            telemetry.fresh = now < stale_at
            if telemetry.fresh and not telemetry.queued:
                telemetry.queued = True
                self._push_stale(stale_at, cluster, reported.name)
            self._refresh(state, entry)

    def _summarize(self, telemetry: _Telemetry, gpus: Iterable[GpuTelemetry]) -> None:
        # MIG instances of one GPU share its UUID: a GPU is busy or unhealthy if any part is.
        busy: dict[str, bool] = {}
        unhealthy: dict[str, bool] = {}
        util: dict[str, float] = {}
        model: str | None = None
        for gpu in gpus:
            busy[gpu.uuid] = busy.get(gpu.uuid, False) or self.busy_rule.busy(gpu)
            unhealthy[gpu.uuid] = unhealthy.get(gpu.uuid, False) or not gpu.healthy
            if gpu.utilization_percent is not None:
                util[gpu.uuid] = max(util.get(gpu.uuid, 0.0), gpu.utilization_percent)
            if model is None and gpu.model:
                model = DEFAULT_CATALOGUE.model_of_name(gpu.model)
        telemetry.model = model
        telemetry.unhealthy = sum(unhealthy.values())
        telemetry.busy = sum(1 for uuid, is_busy in busy.items() if is_busy and not unhealthy[uuid])
        telemetry.util_sum = sum(util.values())
        telemetry.util_count = len(util)

    # --- the assume cache -----------------------------------------------------------------------

    def assume(self, job: str, cluster: str, allocations: Mapping[str, int]) -> Assumption:
        """Promise ``allocations`` (GPUs per node) of ``cluster`` to ``job``.

        Repeating the same promise for the same job returns the existing one; a different
        promise for a job that has one must be preceded by :meth:`forget`.

        Raises:
            OverPlacementError: a node has fewer GPUs free than asked (nothing is recorded).
            ValueError: the job already holds a different assumption, or the allocation is
                empty or not positive.
        """
        now = self._begin()
        wanted = {node: gpus for node, gpus in allocations.items() if gpus}
        existing = self._assumed.get(job)
        if existing is not None:
            if existing.cluster == cluster and existing.original == wanted:
                return self._public(existing)
            raise ValueError(
                f"job {job} already holds GPUs assumed on {existing.cluster}; forget them first"
            )
        if not wanted or any(gpus < 0 for gpus in wanted.values()):
            raise ValueError(f"allocation for job {job} must give nodes a positive GPU count")
        state = self._clusters.get(cluster)
        if state is None:
            raise OverPlacementError(f"cluster {cluster} is not known")
        for name, gpus in wanted.items():
            entry = state.nodes.get(name)
            free = 0 if entry is None or entry.share is None else entry.share.free
            if gpus > free:
                raise OverPlacementError(
                    f"{cluster}/{name}: {gpus} GPUs asked for job {job}, {free} free"
                )
        record = _Assumed(job, cluster, wanted, now + self.assume_ttl)
        self._assumed[job] = record
        for name, gpus in wanted.items():
            entry = state.nodes[name]
            entry.assumed += gpus
            self._refresh(state, entry)
        self._push_expiry(record)
        return self._public(record)

    def forget(self, job: str) -> bool:
        """Drop what is still assumed for ``job``; whether there was anything."""
        self._begin()
        record = self._assumed.pop(job, None)
        if record is None:
            return False
        self._release(record, record.remaining)
        return True

    def assumption(self, job: str) -> Assumption | None:
        self._begin()
        record = self._assumed.get(job)
        return None if record is None else self._public(record)

    def assumptions(self) -> list[Assumption]:
        self._begin()
        return [self._public(record) for record in self._assumed.values()]

    def expire(self) -> None:
        """Apply what time changed: expired assumptions, stale telemetry. Every call does this;
        a timer may call it to keep read-outs such as :meth:`inventory` current."""
        self._begin()

    def _observe(self, state: _Cluster, pod: PodInfo, now: float) -> None:
        record = self._assumed.get(pod.job or "")
        if record is None or record.cluster != state.name or pod.terminal:
            return
        if pod.node is None:
            # The pod exists but waits for the member's scheduler: the job is alive.
            record.expires_at = now + self.assume_ttl
            return
        if pod.uid in record.seen:
            return
        record.seen.add(pod.uid)
        left = pod.gpus
        taken: dict[str, int] = {}
        order = [pod.node, *sorted(n for n in record.remaining if n != pod.node)]
        for name in order:
            if left <= 0:
                break
            take = min(left, record.remaining.get(name, 0))
            if take:
                taken[name] = take
                left -= take
                record.remaining[name] -= take
                if not record.remaining[name]:
                    del record.remaining[name]
        self._release(record, taken)
        if not record.remaining:
            del self._assumed[record.job]

    def _release(self, record: _Assumed, allocations: Mapping[str, int]) -> None:
        state = self._clusters.get(record.cluster)
        if state is None:
            return
        for name, gpus in allocations.items():
            entry = state.nodes.get(name)
            if entry is not None:
                entry.assumed -= gpus
                self._refresh(state, entry)
                if entry.idle():
                    del state.nodes[name]

    @staticmethod
    def _public(record: _Assumed) -> Assumption:
        return Assumption(
            job=record.job,
            cluster=record.cluster,
            allocations=dict(record.remaining),
            expires_at=record.expires_at,
        )

    # --- read-outs ------------------------------------------------------------------------------

    def capacity(self, cluster: str, model: str) -> ModelCapacity | None:
        """GPUs of ``model`` in ``cluster``, or None if it has no node of that model."""
        self._begin()
        state = self._clusters.get(cluster)
        aggregate = None if state is None else state.models.get(model)
        return None if state is None or aggregate is None else aggregate.snapshot(cluster, model)

    def inventory(self, cluster: str) -> list[ModelCapacity]:
        """Every model of ``cluster``, by name: what MemberCluster ``status.gpus`` shows."""
        self._begin()
        state = self._clusters.get(cluster)
        if state is None:
            return []
        return [state.models[m].snapshot(cluster, m) for m in sorted(state.models)]

    def survey(self) -> list[tuple[ClusterInfo, Mapping[str, ModelCapacity]]]:
        """Every cluster with known info and its models: one pass for a decision.

        The mappings are cached between changes; do not modify them.
        """
        self._begin()
        return [
            (state.info, state.model_views())
            for state in self._clusters.values()
            if state.info is not None
        ]

    def node(self, cluster: str, name: str) -> NodeCapacity | None:
        self._begin()
        state = self._clusters.get(cluster)
        entry = None if state is None else state.nodes.get(name)
        if entry is None:
            return None
        share = entry.share
        return NodeCapacity(
            cluster=cluster,
            name=name,
            model=None if share is None else share.model,
            present=entry.present,
            schedulable=entry.present and entry.schedulable,
            allocatable=entry.allocatable,
            requested=entry.requested,
            assumed=entry.assumed,
            telemetry_fresh=entry.telemetry is not None and entry.telemetry.fresh,
            busy=0 if share is None else share.busy,
            busy_untracked=0 if share is None else share.untracked,
            unhealthy=0 if share is None else share.unhealthy,
            free=0 if share is None else share.free,
        )

    def nodes(self, cluster: str) -> list[NodeCapacity]:
        state = self._clusters.get(cluster)
        names = [] if state is None else sorted(state.nodes)
        return [view for name in names if (view := self.node(cluster, name)) is not None]

    def allocate(
        self, cluster: str, model: str, replicas: int, gpus_per_replica: int
    ) -> dict[str, int] | None:
        """GPUs per node for a gang, best fit, or None if it does not fit; records nothing.

        Best fit: nodes with the fewest free GPUs that still hold a replica are filled first
        (ties by name), each taking as many replicas as fit. Tight holes get used and large
        ones stay whole for large replicas later, the bin-packing choice for GPUs.
        """
        self._begin()
        state = self._clusters.get(cluster)
        aggregate = None if state is None else state.models.get(model)
        if aggregate is None or gpus_per_replica <= 0:
            return None
        candidates = sorted(
            (entry.share.free, name)
            for name, entry in aggregate.members.items()
            if entry.share is not None and entry.share.free >= gpus_per_replica
        )
        allocation: dict[str, int] = {}
        left = replicas
        for free, name in candidates:
            if left <= 0:
                break
            take = min(left, free // gpus_per_replica)
            allocation[name] = take * gpus_per_replica
            left -= take
        return allocation if left <= 0 else None

    # --- internals ------------------------------------------------------------------------------

    def _begin(self) -> float:
        ident = threading.get_ident()
        if self._owner is None:
            self._owner = ident
        elif ident != self._owner:
            raise RuntimeError(
                "CapacityIndex is used from a second thread; use it from one asyncio event "
                "loop only (make the kopf handlers that touch it async def)"
            )
        now = self._clock()
        self._advance(now)
        return now

    def _cluster(self, name: str) -> _Cluster:
        state = self._clusters.get(name)
        if state is None:
            state = self._clusters[name] = _Cluster(name)
        return state

    def _add_requested(self, state: _Cluster, node: str, gpus: int) -> None:
        entry = state.node(node)
        entry.requested += gpus
        self._refresh(state, entry)
        if entry.idle():
            del state.nodes[node]

    def _share(self, entry: _Node) -> _Share | None:
        telemetry = entry.telemetry
        model = entry.model or (telemetry.model if telemetry is not None else None)
        if not entry.present or model is None or not entry.whole_gpus:
            return None
        fresh = telemetry is not None and telemetry.fresh
        busy = unhealthy = untracked = 0
        util_sum, util_count = 0.0, 0
        if fresh and telemetry is not None:
            busy, unhealthy = telemetry.busy, telemetry.unhealthy
            untracked = max(0, busy - entry.requested)
            util_sum, util_count = telemetry.util_sum, telemetry.util_count
        allocatable = entry.allocatable if entry.schedulable else 0
        free = allocatable - entry.requested - untracked - unhealthy - entry.assumed
        return _Share(
            model=model,
            total=entry.total,
            allocatable=allocatable,
            free=max(0, free),
            fresh=fresh,
            busy=busy,
            untracked=untracked,
            unhealthy=unhealthy,
            util_sum=util_sum,
            util_count=util_count,
        )

    def _refresh(self, state: _Cluster, entry: _Node) -> None:
        new = self._share(entry)
        old = entry.share
        if new == old:
            return
        state.views = None
        if old is not None:
            aggregate = state.models[old.model]
            aggregate.apply(entry, old, -1)
            if not aggregate.members:
                del state.models[old.model]
        if new is not None:
            aggregate = state.models.get(new.model) or state.models.setdefault(
                new.model, _ModelAggregate()
            )
            aggregate.apply(entry, new, +1)
        entry.share = new

    def _push_stale(self, at: float, cluster: str, node: str) -> None:
        self._sequence += 1
        heapq.heappush(self._stale_heap, (at, self._sequence, cluster, node))

    def _push_expiry(self, record: _Assumed) -> None:
        self._sequence += 1
        heapq.heappush(self._expiry_heap, (record.expires_at, self._sequence, record))

    def _advance(self, now: float) -> None:
        stale = self._stale_heap
        while stale and stale[0][0] <= now:
            _, _, cluster, name = heapq.heappop(stale)
            state = self._clusters.get(cluster)
            entry = None if state is None else state.nodes.get(name)
            telemetry = None if entry is None else entry.telemetry
            if state is None or entry is None or telemetry is None:
                continue
            if telemetry.stale_at > now:  # refreshed since: look again then
                self._push_stale(telemetry.stale_at, cluster, name)
                continue
            telemetry.queued = False
            if telemetry.fresh:
                telemetry.fresh = False
                self._refresh(state, entry)
        expiry = self._expiry_heap
        while expiry and expiry[0][0] <= now:
            _, _, record = heapq.heappop(expiry)
            if self._assumed.get(record.job) is not record:
                continue
            if record.expires_at > now:  # renewed by a pending pod
                self._push_expiry(record)
                continue
            del self._assumed[record.job]
            self._release(record, record.remaining)
