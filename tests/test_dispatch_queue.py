"""The pending queue: priority, first come first served, fairness across tenants, backfill."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from suanli.api.reasons import JobReason
from suanli.dispatch.capacity import CapacityIndex
from suanli.dispatch.models import ClusterInfo, JobRequest, NodeInfo, PodInfo
from suanli.dispatch.queue import DrainResult, PendingQueue

T0 = 1_750_000_000.0


def index_with(free_gpus: dict[str, int], model: str = "H100") -> CapacityIndex:
    """One cluster, one 8-GPU node per entry, with the given GPUs free."""
    index = CapacityIndex(clock=lambda: T0)
    index.upsert_cluster(
        ClusterInfo("member-a", "shanghai", {"H100": Decimal(28), "L40S": Decimal(8)})
    )
    add_nodes(index, free_gpus, model)
    return index


def add_nodes(index: CapacityIndex, free_gpus: dict[str, int], model: str) -> None:
    for node, free in free_gpus.items():
        index.upsert_node("member-a", NodeInfo(node, model, 8))
        if free < 8:
            index.upsert_pod("member-a", PodInfo(f"{node}-used", node, 8 - free))


def job(
    name: str,
    *,
    tenant: str = "team-a",
    at: float = 0,
    priority: int = 0,
    gpus: int = 1,
    replicas: int = 1,
    model: str = "H100",
) -> JobRequest:
    return JobRequest(
        key=name,
        name=f"{tenant}/{name}",
        tenant=tenant,
        replicas=replicas,
        gpus_per_replica=gpus,
        gpu_models=frozenset({model}),
        priority=priority,
        submitted_at=T0 + at,
    )


def placed_names(queue: PendingQueue, index: CapacityIndex, **held: int) -> list[str]:
    return [p.job.key for p in queue.drain(index, held=held).placed]


def test_higher_priority_first_then_first_come() -> None:
    queue = PendingQueue()
    for request in [
        job("late-low", at=3),
        job("early-low", at=1),
        job("high", at=5, priority=10),
        job("negative", at=0, priority=-5),
    ]:
        queue.push(request)
    assert [j.key for j in queue.ordered()] == ["high", "early-low", "late-low", "negative"]
    index = index_with({"n0": 2})
    result = queue.drain(index)
    assert [p.job.key for p in result.placed] == ["high", "early-low"]
    assert list(result.waiting) == ["late-low", "negative"]
    assert result.waiting["late-low"].reason == JobReason.NO_CAPACITY
    assert len(queue) == 2 and "high" not in queue and "late-low" in queue


def test_a_burst_of_one_tenant_alternates_with_others() -> None:
    queue = PendingQueue()
    for n in range(6):
        queue.push(job(f"a{n}", tenant="team-a", at=n))
    queue.push(job("b0", tenant="team-b", at=10))
    queue.push(job("b1", tenant="team-b", at=11))
    queue.push(job("c0", tenant="team-c", at=12, gpus=2))
    assert [j.key for j in queue.ordered()] == [
        "a0",
        "b0",
        "c0",
        "a1",
        "b1",
        "a2",
        "a3",
        "a4",
        "a5",
    ]
    index = index_with({"n0": 6})
    assert placed_names(queue, index) == ["a0", "b0", "c0", "a1", "b1"]


def test_tenants_already_holding_gpus_wait_behind_those_holding_few() -> None:
    queue = PendingQueue()
    queue.push(job("a0", tenant="team-a", at=0))
    queue.push(job("b0", tenant="team-b", at=100))
    index = index_with({"n0": 1})
    assert placed_names(queue, index, **{"team-a": 16, "team-b": 4}) == ["b0"]
    # fairness never overrides priority
    queue.push(job("urgent", tenant="team-a", at=200, priority=1))
    assert [j.key for j in queue.ordered({"team-a": 16})] == ["urgent", "a0"]


def test_a_burst_never_places_more_than_there_is() -> None:
    queue = PendingQueue()
    for n in range(100):
        queue.push(job(f"j{n:03}", tenant=f"team-{n % 7}", at=n, gpus=1 + n % 3))
    index = index_with({"n0": 8, "n1": 8, "n2": 3})
    result = queue.drain(index)
    assumed = sum(sum(p.assumption.allocations.values()) for p in result.placed)
    assert assumed == sum(p.job.total_gpus for p in result.placed) <= 19
    assert all(view.free >= 0 and view.assumed <= 8 for view in index.nodes("member-a"))
    assert len(result.placed) + len(result.waiting) == 100 == len(result.placed) + len(queue)
    assert assumed >= 17  # small jobs fill what the larger ones leave
    # each waiting job has its own decision, even where the pass reused one
    assert all(key == decision.job for key, decision in result.waiting.items())


def test_small_jobs_backfill_around_a_gang_that_does_not_fit() -> None:
    queue = PendingQueue(bypass_limit=100)
    queue.push(job("big", at=0, gpus=8))
    queue.push(job("small-1", at=1))
    queue.push(job("small-2", at=2))
    index = index_with({"n0": 4})
    assert placed_names(queue, index) == ["small-1", "small-2"]
    assert queue.bypassed("big") == 2
    assert "big" in queue


def test_a_gang_overtaken_too_often_holds_the_capacity_it_waits_for() -> None:
    queue = PendingQueue(bypass_limit=2)
    queue.push(job("big", tenant="team-b", at=0, gpus=8))
    for n in range(4):
        queue.push(job(f"small-{n}", at=1 + n))
    index = index_with({"n0": 6})
    result = queue.drain(index)
    assert [p.job.key for p in result.placed] == ["small-0", "small-1"]
    assert result.waiting["small-2"].summary == ("member-a: H100 held for queued job team-b/big")
    assert result.waiting["small-2"].reason == JobReason.NO_CAPACITY
    # GPUs free up: the small jobs still may not take them until the gang is placed
    index.delete_pod("member-a", "n0-used")
    index.forget("small-0")
    index.forget("small-1")
    index.upsert_pod("member-a", PodInfo("s0", "n0", 1, job="small-0"))
    index.upsert_pod("member-a", PodInfo("s1", "n0", 1, job="small-1"))
    assert placed_names(queue, index) == []
    index.delete_pod("member-a", "s0")
    index.delete_pod("member-a", "s1")
    assert placed_names(queue, index) == ["big"]


def test_holding_is_limited_to_capacity_the_gang_could_use() -> None:
    queue = PendingQueue(bypass_limit=0)  # strict per (cluster, model)
    queue.push(job("big", at=0, gpus=8))
    queue.push(job("small-h100", at=1))
    queue.push(job("small-l40s", at=2, model="L40S"))
    index = index_with({"n0": 4})
    add_nodes(index, {"l0": 8}, "L40S")
    assert placed_names(queue, index) == ["small-l40s"]
    assert queue.bypassed("big") == 0  # an L40S job never competed with it


def test_pushing_again_updates_in_place_and_remove_takes_out() -> None:
    queue = PendingQueue()
    queue.push(job("first", at=0))
    queue.push(job("second", at=1))
    queue.push(job("first", at=0, gpus=2))
    assert [j.key for j in queue.ordered()] == ["first", "second"]
    first = queue.get("first")
    assert first is not None and first.gpus_per_replica == 2
    assert queue.remove("first") == first and queue.remove("first") is None
    assert queue.get("first") is None and queue.bypassed("first") == 0
    assert [j.key for j in queue.ordered()] == ["second"]
    empty = PendingQueue().drain(index_with({}))
    assert empty.placed == () and dict(empty.waiting) == {}


def test_ties_in_submission_time_keep_arrival_order() -> None:
    queue = PendingQueue()
    for name in ["x", "y", "z"]:
        queue.push(job(name, at=0))
    assert [j.key for j in queue.ordered()] == ["x", "y", "z"]


def test_the_async_drain_lets_other_tasks_run_and_skips_jobs_removed_meanwhile() -> None:
    queue = PendingQueue()
    for n in range(40):
        queue.push(job(f"j{n:02}", tenant=f"team-{n % 4}", at=n))
    index = index_with({"n0": 8, "n1": 8, "n2": 8})
    turns: list[int] = []

    async def meanwhile() -> None:
        for turn in range(100):
            turns.append(turn)
            queue.remove("j39")  # the tenant deletes a job while the drain runs
            await asyncio.sleep(0)

    async def main() -> DrainResult:
        other = asyncio.create_task(meanwhile())
        result = await queue.drain_async(index, decisions_per_turn=4)
        other.cancel()
        return result

    result = asyncio.run(main())
    assert len(turns) >= 5  # the loop ran other work during the drain
    assert len(result.placed) == 24
    assert "j39" not in result.waiting and "j39" not in [p.job.key for p in result.placed]
    assert len(result.waiting) == len(queue) == 15


def test_the_async_drain_decides_as_the_sync_one() -> None:
    def setup() -> tuple[PendingQueue, CapacityIndex]:
        queue = PendingQueue(bypass_limit=1)
        queue.push(job("big", tenant="b", gpus=8))
        for n in range(10):
            queue.push(job(f"s{n}", tenant=f"t{n % 3}", at=n + 1, gpus=1 + n % 2))
        return queue, index_with({"n0": 6, "n1": 3})

    queue, index = setup()
    expected = queue.drain(index)
    queue, index = setup()
    got = asyncio.run(queue.drain_async(index, decisions_per_turn=1))
    assert [p.job.key for p in got.placed] == [p.job.key for p in expected.placed]
    assert {k: d.summary for k, d in got.waiting.items()} == {
        k: d.summary for k, d in expected.waiting.items()
    }


def test_the_oldest_submission_is_the_longest_waiting_job() -> None:
    queue = PendingQueue()
    assert queue.oldest_submitted_at() is None
    queue.push(job("late", at=30))
    queue.push(job("early", at=10, priority=-5))
    queue.push(job("urgent", at=20, priority=100))
    assert queue.oldest_submitted_at() == T0 + 10
    queue.remove("early")
    assert queue.oldest_submitted_at() == T0 + 20
