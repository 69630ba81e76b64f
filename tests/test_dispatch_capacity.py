"""The capacity index: events, telemetry, the assume cache, and never placing more than there is."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suanli.dispatch.capacity import BusyRule, CapacityIndex, OverPlacementError
from suanli.dispatch.models import ClusterInfo, JobRequest, NodeInfo, PodInfo
from suanli.dispatch.policy import decide
from suanli.telemetry.parse import GpuTelemetry, NodeTelemetry, TelemetrySnapshot

T0 = 1_750_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make_index(
    clock: Clock,
    nodes: int = 2,
    gpus: int = 8,
    model: str = "H100",
    *,
    telemetry_max_age: float = 60,
    assume_ttl: float = 300,
) -> CapacityIndex:
    index = CapacityIndex(clock=clock, telemetry_max_age=telemetry_max_age, assume_ttl=assume_ttl)
    index.upsert_cluster(ClusterInfo("member-a", "shanghai", {model: Decimal("28.00")}))
    for n in range(nodes):
        index.upsert_node("member-a", NodeInfo(f"n{n}", model, gpus))
    return index


def free(index: CapacityIndex, node: str, cluster: str = "member-a") -> int:
    view = index.node(cluster, node)
    return 0 if view is None else view.free


def gpu(node: str, i: int, *, util: float = 0, fb: float = 0, xid: int = 0) -> GpuTelemetry:
    return GpuTelemetry(
        node=node,
        index=i,
        uuid=f"GPU-{node}-{i}",
        model="NVIDIA H100 80GB HBM3",
        utilization_percent=util,
        fb_used_mib=fb,
        last_xid=xid,
    )


def snapshot(at: float, *nodes: tuple[str, list[GpuTelemetry]]) -> TelemetrySnapshot:
    return TelemetrySnapshot(
        read_at=at,
        data_at=at,
        nodes=tuple(NodeTelemetry(name, tuple(gpus)) for name, gpus in nodes),
    )


# --- Kubernetes' view ---------------------------------------------------------------------------


def test_bound_live_pods_take_their_gpus() -> None:
    clock = Clock()
    index = make_index(clock)
    index.upsert_pod("member-a", PodInfo("p1", None, 4))  # not bound yet: nothing taken
    assert free(index, "n0") == 8
    index.upsert_pod("member-a", PodInfo("p1", "n0", 4))
    index.upsert_pod("member-a", PodInfo("p2", "n0", 1))
    assert free(index, "n0") == 3
    index.upsert_pod("member-a", PodInfo("p1", "n0", 4))  # a repeated event changes nothing
    assert free(index, "n0") == 3
    index.upsert_pod("member-a", PodInfo("p1", "n0", 4, terminal=True))
    assert free(index, "n0") == 7
    index.delete_pod("member-a", "p2")
    index.delete_pod("member-a", "p2")
    assert free(index, "n0") == 8
    capacity = index.capacity("member-a", "H100")
    assert capacity is not None
    assert (capacity.total, capacity.allocatable, capacity.free) == (16, 16, 16)


def test_pods_may_arrive_before_their_node() -> None:
    clock = Clock()
    index = make_index(clock, nodes=0)
    index.upsert_pod("member-a", PodInfo("p1", "late", 6))
    assert index.capacity("member-a", "H100") is None
    index.upsert_node("member-a", NodeInfo("late", "H100", 8))
    assert free(index, "late") == 2
    index.delete_node("member-a", "late")
    assert index.capacity("member-a", "H100") is None
    index.delete_pod("member-a", "p1")
    assert index.node("member-a", "late") is None  # nothing refers to it any more


def test_unschedulable_nodes_offer_nothing_but_still_count_in_total() -> None:
    clock = Clock()
    index = make_index(clock)
    index.upsert_node("member-a", NodeInfo("n1", "H100", 8, schedulable=False))
    capacity = index.capacity("member-a", "H100")
    assert capacity is not None
    assert (capacity.total, capacity.allocatable, capacity.free) == (16, 8, 8)
    assert (capacity.nodes, capacity.schedulable_nodes) == (2, 1)
    index.upsert_node("member-a", NodeInfo("n0", "A100", 8, whole_gpus=False))
    assert index.capacity("member-a", "A100") is None  # MIG slices are not whole GPUs


def test_resync_replaces_what_watches_missed() -> None:
    clock = Clock()
    index = make_index(clock, nodes=3)
    index.upsert_pod("member-a", PodInfo("gone", "n0", 8))
    index.sync_pods("member-a", [PodInfo("kept", "n1", 2)])
    index.sync_nodes("member-a", [NodeInfo("n1", "H100", 8), NodeInfo("n3", "H100", 4)])
    assert [(v.name, v.free) for v in index.nodes("member-a")] == [("n1", 6), ("n3", 4)]


# --- telemetry ----------------------------------------------------------------------------------


def test_gpus_busy_outside_kubernetes_are_taken_out_while_telemetry_is_fresh() -> None:
    clock = Clock()
    index = make_index(clock, telemetry_max_age=60)
    index.upsert_pod("member-a", PodInfo("p1", "n0", 2))
    # 5 GPUs busy (by utilization or by memory), 1 with an XID error, 2 idle
    gpus = [gpu("n0", i, util=90) for i in range(3)]
    gpus += [gpu("n0", 3, fb=30_000), gpu("n0", 4, util=50), gpu("n0", 5, xid=79)]
    gpus += [gpu("n0", 6, util=5, fb=500), gpu("n0", 7)]
    index.update_telemetry("member-a", snapshot(clock.now, ("n0", gpus)))
    view = index.node("member-a", "n0")
    assert view is not None
    assert (view.busy, view.busy_untracked, view.unhealthy) == (5, 3, 1)
    assert view.free == 8 - 2 - 3 - 1
    capacity = index.capacity("member-a", "H100")
    assert capacity is not None
    assert (capacity.fresh_nodes, capacity.nodes, capacity.busy_untracked) == (1, 2, 3)
    # stale: back to Kubernetes' view
    clock.now += 61
    assert free(index, "n0") == 6
    capacity = index.capacity("member-a", "H100")
    assert capacity is not None and capacity.fresh_nodes == 0


def test_busy_gpus_under_kubernetes_pods_are_not_counted_twice() -> None:
    clock = Clock()
    index = make_index(clock)
    for p in range(4):
        index.upsert_pod("member-a", PodInfo(f"p{p}", "n0", 1))
    gpus = [gpu("n0", i, util=80 if i < 3 else 0) for i in range(8)]
    index.update_telemetry("member-a", snapshot(clock.now, ("n0", gpus)))
    assert free(index, "n0") == 4  # 3 busy GPUs are within the 4 Kubernetes already counts


def test_newer_telemetry_wins_and_an_older_snapshot_is_ignored() -> None:
    clock = Clock()
    index = make_index(clock, telemetry_max_age=60)
    index.update_telemetry("member-a", snapshot(clock.now, ("n0", [gpu("n0", 0, util=99)])))
    index.update_telemetry("member-a", snapshot(clock.now - 10, ("n0", [gpu("n0", 0)])))
    assert free(index, "n0") == 7
    clock.now += 30
    index.update_telemetry("member-a", snapshot(clock.now, ("n0", [gpu("n0", 0)])))
    clock.now += 45  # 75 s after the first snapshot, 45 s after the last: still fresh
    view = index.node("member-a", "n0")
    assert view is not None and view.telemetry_fresh and view.free == 8
    stale = snapshot(clock.now - 120, ("n1", [gpu("n1", 0, util=99)]))
    index.update_telemetry("member-a", stale)  # stale on arrival: ignored for capacity
    assert free(index, "n1") == 8


def test_telemetry_names_the_model_of_an_unlabelled_node() -> None:
    clock = Clock()
    index = make_index(clock, nodes=0)
    index.upsert_node("member-a", NodeInfo("bare", None, 8))
    assert index.inventory("member-a") == []
    index.update_telemetry("member-a", snapshot(clock.now, ("bare", [gpu("bare", 0)])))
    assert [c.model for c in index.inventory("member-a")] == ["H100"]


def test_mig_instances_count_once_per_gpu() -> None:
    clock = Clock()
    index = make_index(clock)
    parts = [
        GpuTelemetry("n0", 0, "GPU-A", "NVIDIA A100", gpu_instance="1", utilization_percent=0),
        GpuTelemetry("n0", 0, "GPU-A", "NVIDIA A100", gpu_instance="2", utilization_percent=70),
    ]
    index.update_telemetry("member-a", snapshot(clock.now, ("n0", parts)))
    view = index.node("member-a", "n0")
    assert view is not None and view.busy == 1


def test_busy_rule_thresholds() -> None:
    rule = BusyRule(utilization_percent=10, memory_used_mib=1024)
    assert rule.busy(gpu("n", 0, util=10))
    assert rule.busy(gpu("n", 0, fb=1024))
    assert not rule.busy(gpu("n", 0, util=9.9, fb=1000))
    assert not rule.busy(GpuTelemetry("n", 0, "u", "m"))  # no readings: not evidence of use


# --- the assume cache ---------------------------------------------------------------------------


def test_assume_then_observe_the_pods() -> None:
    clock = Clock()
    index = make_index(clock)
    index.assume("job-1", "member-a", {"n0": 4, "n1": 4})
    assert (free(index, "n0"), free(index, "n1")) == (4, 4)
    # the member's scheduler binds one pod as predicted, one elsewhere
    index.upsert_pod("member-a", PodInfo("a", "n0", 4, job="job-1"))
    assert (free(index, "n0"), free(index, "n1")) == (4, 4)
    index.upsert_pod("member-a", PodInfo("a", "n0", 4, job="job-1"))  # seen already
    assumption = index.assumption("job-1")
    assert assumption is not None and assumption.allocations == {"n1": 4}
    index.upsert_pod("member-a", PodInfo("b", "n0", 4, job="job-1"))
    assert index.assumption("job-1") is None
    assert (free(index, "n0"), free(index, "n1")) == (0, 8)


def test_assume_refuses_what_does_not_fit_and_records_nothing() -> None:
    clock = Clock()
    index = make_index(clock)
    index.upsert_pod("member-a", PodInfo("p", "n1", 6))
    with pytest.raises(OverPlacementError, match="n1: 4 GPUs asked for job j, 2 free"):
        index.assume("j", "member-a", {"n0": 4, "n1": 4})
    assert index.assumption("j") is None and free(index, "n0") == 8
    with pytest.raises(OverPlacementError):
        index.assume("j", "member-a", {"nowhere": 1})
    with pytest.raises(OverPlacementError):
        index.assume("j", "member-x", {"n0": 1})


def test_assume_is_idempotent_and_one_per_job() -> None:
    clock = Clock()
    index = make_index(clock)
    first = index.assume("j", "member-a", {"n0": 2})
    assert index.assume("j", "member-a", {"n0": 2}) == first
    assert free(index, "n0") == 6
    with pytest.raises(ValueError, match="forget them first"):
        index.assume("j", "member-a", {"n1": 2})
    with pytest.raises(ValueError, match="positive"):
        index.assume("k", "member-a", {"n0": 0})
    assert index.forget("j") and not index.forget("j")
    assert free(index, "n0") == 8


def test_assumptions_expire_unless_their_pods_show_up() -> None:
    clock = Clock()
    index = make_index(clock, assume_ttl=300)
    index.assume("slow", "member-a", {"n0": 8})
    index.assume("lost", "member-a", {"n1": 8})
    clock.now += 200
    index.upsert_pod("member-a", PodInfo("s0", None, 8, job="slow"))  # pending: renews
    clock.now += 200
    assert [a.job for a in index.assumptions()] == ["slow"]
    assert (free(index, "n0"), free(index, "n1")) == (0, 8)
    clock.now += 300
    assert index.assumptions() == [] and free(index, "n0") == 8


def test_deleting_a_cluster_drops_its_assumptions() -> None:
    clock = Clock()
    index = make_index(clock)
    index.assume("j", "member-a", {"n0": 1})
    assert index.delete_cluster("member-a") == ["j"]
    assert index.assumption("j") is None and index.clusters() == []


# --- read-outs ----------------------------------------------------------------------------------


def test_histograms_and_gang_fit() -> None:
    clock = Clock()
    index = make_index(clock, nodes=4)
    for node, used in [("n0", 8), ("n1", 5), ("n2", 2)]:
        index.upsert_pod("member-a", PodInfo(f"p-{node}", node, used))
    capacity = index.capacity("member-a", "H100")
    assert capacity is not None
    assert capacity.free_histogram == ((3, 1), (6, 1), (8, 1))
    assert capacity.allocatable_histogram == ((8, 4),)
    assert (capacity.max_free_on_node, capacity.max_allocatable_on_node) == (8, 8)
    assert [capacity.replicas_that_fit(g) for g in (1, 2, 3, 4, 8)] == [17, 8, 5, 3, 1]
    assert capacity.replicas_that_could_ever_fit(4) == 8


def test_allocation_is_best_fit() -> None:
    clock = Clock()
    index = make_index(clock, nodes=4)
    for node, used in [("n0", 4), ("n1", 6), ("n2", 0), ("n3", 2)]:
        index.upsert_pod("member-a", PodInfo(f"p-{node}", node, used))
    # free: n0 4, n1 2, n2 8, n3 6: the tightest holes first, each taking what fits
    assert index.allocate("member-a", "H100", 3, 2) == {"n1": 2, "n0": 4}
    assert index.allocate("member-a", "H100", 2, 4) == {"n0": 4, "n3": 4}
    assert index.allocate("member-a", "H100", 1, 8) == {"n2": 8}
    assert index.allocate("member-a", "H100", 2, 8) is None


def test_the_index_refuses_a_second_thread() -> None:
    clock = Clock()
    index = make_index(clock)
    errors: list[BaseException] = []

    def other() -> None:
        try:
            index.node("member-a", "n0")
        except RuntimeError as error:
            errors.append(error)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert len(errors) == 1 and "one asyncio event loop" in str(errors[0])


# --- concurrency --------------------------------------------------------------------------------


def job(n: int, gpus: int = 2) -> JobRequest:
    return JobRequest(key=f"j{n}", name=f"t/j{n}", tenant="t", gpus_per_replica=gpus)


def test_racing_decisions_never_over_place() -> None:
    """Tasks that await between deciding and assuming: assume's re-check refuses the excess."""
    clock = Clock()
    index = make_index(clock)  # 16 GPUs

    async def dispatch(n: int) -> bool:
        decision = decide(job(n), index)
        await asyncio.sleep(0)  # every other task decides on the same, stale view
        if decision.choice is None:
            return False
        try:
            index.assume(f"j{n}", decision.choice.cluster, decision.choice.gpus_by_node)
        except OverPlacementError:
            return False
        return True

    async def main() -> list[bool]:
        return await asyncio.gather(*(dispatch(n) for n in range(40)))

    placed = sum(asyncio.run(main()))
    assumed = sum(sum(a.allocations.values()) for a in index.assumptions())
    assert assumed == 2 * placed <= 16
    assert all(view.assumed <= 8 for view in index.nodes("member-a"))


def test_decide_and_assume_without_an_await_fill_the_cluster_exactly() -> None:
    clock = Clock()
    index = make_index(clock)

    async def dispatch(n: int) -> bool:
        await asyncio.sleep(0)
        decision = decide(job(n), index)
        if decision.choice is None:
            return False
        index.assume(f"j{n}", decision.choice.cluster, decision.choice.gpus_by_node)
        return True

    async def main() -> list[bool]:
        return await asyncio.gather(*(dispatch(n) for n in range(40)))

    assert sum(asyncio.run(main())) == 8
    assert [v.free for v in index.nodes("member-a")] == [0, 0]


# --- the invariant, under any sequence of events ------------------------------------------------

NODES = ("n0", "n1", "n2")
ALLOCATABLE = {"n0": 8, "n1": 4, "n2": 2}

operation = st.one_of(
    st.tuples(
        st.just("assume"),
        st.integers(0, 5),
        st.dictionaries(st.sampled_from(NODES), st.integers(1, 8), min_size=1, max_size=3),
    ),
    st.tuples(st.just("bind"), st.integers(0, 5), st.integers(0, 2)),
    st.tuples(st.just("pending"), st.integers(0, 5), st.just(0)),
    st.tuples(st.just("finish"), st.integers(0, 30), st.booleans()),
    st.tuples(st.just("forget"), st.integers(0, 5), st.just(0)),
    st.tuples(st.just("tick"), st.integers(1, 400), st.just(0)),
    st.tuples(st.just("telemetry"), st.sampled_from(NODES), st.integers(0, 8)),
    st.tuples(st.just("other"), st.sampled_from(NODES), st.integers(1, 4)),
    st.tuples(st.just("node"), st.sampled_from(NODES), st.booleans()),
)


def check_invariants(index: CapacityIndex) -> None:
    views = [v for v in index.nodes("member-a") if v.present]
    for view in views:
        # what Kubernetes holds plus what we promised never exceeds what the node offers
        assert view.requested + view.assumed <= view.allocatable, view
        expected = view.allocatable - view.requested - view.busy_untracked - view.unhealthy
        assert view.free == (max(0, expected - view.assumed) if view.schedulable else 0)
    capacity = index.capacity("member-a", "H100")
    if capacity is None:
        assert not views
        return
    # the incremental aggregates agree with a recount from the nodes
    assert capacity.free == sum(v.free for v in views)
    assert capacity.nodes == len(views)
    assert capacity.fresh_nodes == sum(v.telemetry_fresh for v in views)
    assert dict(capacity.free_histogram) == Counter(v.free for v in views if v.free)
    schedulable = Counter(v.allocatable for v in views if v.schedulable and v.allocatable)
    assert dict(capacity.allocatable_histogram) == schedulable


@settings(max_examples=150, deadline=None)
@given(st.lists(operation, max_size=60))
def test_no_sequence_of_events_over_places(operations: list[tuple[str, Any, Any]]) -> None:
    clock = Clock()
    index = CapacityIndex(clock=clock, assume_ttl=300, telemetry_max_age=120)
    index.upsert_cluster(ClusterInfo("member-a", "shanghai", {"H100": Decimal(1)}))
    for name, gpus in ALLOCATABLE.items():
        index.upsert_node("member-a", NodeInfo(name, "H100", gpus))
    pods: list[PodInfo] = []
    for kind, a, b in operations:
        if kind == "assume":
            allocation = dict(b)
            before = {n: free(index, n) for n in allocation}
            try:
                index.assume(f"j{a}", "member-a", allocation)
            except OverPlacementError:
                assert any(allocation[n] > before[n] for n in allocation)
            except ValueError:
                assert index.assumption(f"j{a}") is not None
        elif kind == "bind":
            # the member's scheduler binds the job's next pod where the plan says
            assumption = index.assumption(f"j{a}")
            if assumption is not None and assumption.allocations:
                nodes = sorted(assumption.allocations)
                node = nodes[int(b) % len(nodes)]
                pods.append(
                    PodInfo(f"p{len(pods)}", node, assumption.allocations[node], job=f"j{a}")
                )
                index.upsert_pod("member-a", pods[-1])
        elif kind == "pending":
            index.upsert_pod("member-a", PodInfo(f"pending-{a}", None, 1, job=f"j{a}"))
        elif kind == "finish" and pods:
            pod = pods[int(a) % len(pods)]
            if b:
                index.delete_pod("member-a", pod.uid)
            else:
                index.upsert_pod("member-a", PodInfo(pod.uid, pod.node, pod.gpus, terminal=True))
        elif kind == "forget":
            index.forget(f"j{a}")
        elif kind == "tick":
            clock.now += int(a)
        elif kind == "telemetry":
            node = str(a)
            busy = int(b)
            readings = [gpu(node, i, util=100 if i < busy else 0) for i in range(ALLOCATABLE[node])]
            index.update_telemetry("member-a", snapshot(clock.now, (node, readings)))
        elif kind == "other":
            # another tenant's pod on the member, admitted only where nothing is promised
            node, gpus_asked = str(a), int(b)
            view = index.node("member-a", node)
            if view is not None and view.requested + view.assumed + gpus_asked <= view.allocatable:
                pods.append(PodInfo(f"p{len(pods)}", node, gpus_asked))
                index.upsert_pod("member-a", pods[-1])
        elif kind == "node":
            node = str(a)
            index.upsert_node(
                "member-a", NodeInfo(node, "H100", ALLOCATABLE[node], schedulable=bool(b))
            )
        check_invariants(index)
