"""Placement latency and index memory at federation scale.

Builds a capacity index of M members x N nodes x G GPUs (1,000 x 100 x 8 by default: 100,000
nodes, 800,000 GPUs) with mixed models, prices, regions, used GPUs, fresh telemetry on most
members and a few members cordoned or not Ready; then times:

- one placement decision (:func:`decide`) for varied jobs (gang sizes, models, regions,
  clusters, both policies): median, p99, max;
- decide plus assume plus forget, the handler's critical section;
- single events: a pod bound, a node updated, one node's telemetry;
- a drain of a queue of jobs.

Memory is the index's own, measured with tracemalloc after the inputs are dropped (which also
slows the build several times over: the build time printed is under tracing).

Latencies are given as wall time and as this process's CPU time: on a shared machine the wall
figures include time spent waiting for a core. After the build the benchmark calls
``gc.freeze()``, as the operator should after its initial sync: without it, the collector's
full passes over the index's few hundred thousand objects add pauses of tens to hundreds of
milliseconds to whatever decision they happen to land in (``--no-freeze`` shows them).

    .venv/bin/python benchmarks/dispatch_placement.py
    .venv/bin/python benchmarks/dispatch_placement.py --members 100 --decisions 500
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from decimal import Decimal

from suanli.api.computejob import PlacementPolicy
from suanli.dispatch.capacity import CapacityIndex
from suanli.dispatch.models import ClusterInfo, JobRequest, NodeInfo, PodInfo
from suanli.dispatch.policy import decide
from suanli.dispatch.queue import PendingQueue
from suanli.telemetry.parse import GpuTelemetry, NodeTelemetry, TelemetrySnapshot

MODELS = {  # model: (base price per GPU-hour, dcgm modelName)
    "H100": (28, "NVIDIA H100 80GB HBM3"),
    "H800": (26, "NVIDIA H800 80GB HBM3"),
    "H20": (12, "NVIDIA H20"),
    "A800": (16, "NVIDIA A800-SXM4-80GB"),
    "A100": (15, "NVIDIA A100-SXM4-80GB"),
    "L40S": (8, "NVIDIA L40S"),
    "4090": (4, "NVIDIA GeForce RTX 4090"),
}
REGIONS = [f"region-{n}" for n in range(8)]


def build(
    rng: random.Random, members: int, nodes: int, gpus: int, now: float
) -> tuple[CapacityIndex, float]:
    """The index, and the seconds it took to feed it (events, as watches would)."""
    index = CapacityIndex(clock=lambda: now)
    models = list(MODELS)
    started = time.perf_counter()
    for m in range(members):
        name = f"member-{m:04}"
        offered = rng.sample(models, rng.choice((1, 1, 2, 3)))
        prices = {
            model: Decimal(MODELS[model][0]) + Decimal(rng.randrange(0, 500)) / 100
            for model in offered
        }
        roll = rng.random()
        index.upsert_cluster(
            ClusterInfo(
                name,
                rng.choice(REGIONS),
                prices,
                ready=roll > 0.03,
                cordoned=0.03 < roll < 0.05,
            )
        )
        telemetry = rng.random() < 0.7
        snapshot_nodes = []
        for n in range(nodes):
            node = f"{name}-n{n:03}"
            model = offered[n % len(offered)]
            index.upsert_node(name, NodeInfo(node, model, gpus))
            used = rng.choice((0, 0, gpus // 2, gpus, gpus, gpus, gpus - 1, 1))
            if used:
                index.upsert_pod(name, PodInfo(f"{node}-p", node, used))
            if telemetry:
                busy = used + (1 if rng.random() < 0.05 else 0)
                snapshot_nodes.append(
                    NodeTelemetry(
                        node,
                        tuple(
                            GpuTelemetry(
                                node,
                                i,
                                f"GPU-{node}-{i}",
                                MODELS[model][1],
                                utilization_percent=95.0 if i < busy else 0.0,
                                fb_used_mib=60_000.0 if i < busy else 0.0,
                            )
                            for i in range(gpus)
                        ),
                    )
                )
        if snapshot_nodes:
            index.update_telemetry(name, TelemetrySnapshot(now, now, tuple(snapshot_nodes)))
    return index, time.perf_counter() - started


def jobs(rng: random.Random, count: int, members: int) -> list[JobRequest]:
    made = []
    for n in range(count):
        gpus = rng.choice((1, 1, 2, 4, 8, 8))
        replicas = rng.choice((1, 1, 2, 4, 8)) if gpus >= 4 else rng.choice((1, 2))
        roll = rng.random()
        made.append(
            JobRequest(
                key=f"job-{n}",
                name=f"tenant-{n % 13}/job-{n}",
                tenant=f"tenant-{n % 13}",
                replicas=replicas,
                gpus_per_replica=gpus,
                gpu_models=frozenset(rng.sample(list(MODELS), rng.choice((0, 1, 1, 2)))),
                regions=frozenset(rng.sample(REGIONS, 2)) if roll < 0.2 else frozenset(),
                clusters=(
                    frozenset(f"member-{rng.randrange(members):04}" for _ in range(5))
                    if 0.2 <= roll < 0.3
                    else frozenset()
                ),
                policy=(
                    PlacementPolicy.MOST_HEADROOM
                    if rng.random() < 0.3
                    else PlacementPolicy.CHEAPEST
                ),
                priority=rng.choice((0, 0, 0, 10)),
                submitted_at=float(n),
            )
        )
    return made


def timed(samples: list[tuple[float, float]]) -> str:
    parts = []
    for label, values in (("wall", [w for w, _ in samples]), ("cpu", [c for _, c in samples])):
        cut = statistics.quantiles(values, n=100, method="inclusive")
        parts.append(
            f"{label} median {statistics.median(values) * 1000:6.2f} p99 {cut[98] * 1000:6.2f} "
            f"max {max(values) * 1000:6.2f} ms"
        )
    return " | ".join(parts)


class Stopwatch:
    """Wall and CPU time of a block."""

    def __enter__(self) -> Stopwatch:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    @property
    def sample(self) -> tuple[float, float]:
        return (self.wall, self.cpu)


def per_call(samples: int, action: Callable[[int], object]) -> float:
    started = time.perf_counter()
    for n in range(samples):
        action(n)
    return (time.perf_counter() - started) / samples


def measure_decisions(index: CapacityIndex, requests: list[JobRequest]) -> None:
    decide_times: list[tuple[float, float]] = []
    placed = 0
    for request in requests:
        with Stopwatch() as watch:
            decision = decide(request, index)
        decide_times.append(watch.sample)
        placed += decision.placed
    print(f"decide, {len(requests)} varied jobs ({placed} placeable):")
    print(f"  {timed(decide_times)}")

    critical: list[tuple[float, float]] = []
    for request in requests:
        with Stopwatch() as watch:
            decision = decide(request, index)
            if decision.choice is not None:
                index.assume(request.key, decision.choice.cluster, decision.choice.gpus_by_node)
        critical.append(watch.sample)
        index.forget(request.key)
    print("decide + assume:")
    print(f"  {timed(critical)}")

    with Stopwatch() as watch:
        for request in requests[:20]:
            _ = decide(request, index).reasons
    print(f"every cluster's reason written out: {watch.wall / 20 * 1000:.2f} ms per decision")


def measure_events(index: CapacityIndex, gpus: int, now: float) -> None:
    cluster = "member-0000"
    node = f"{cluster}-n000"
    pod_cost = per_call(
        20_000,
        lambda n: index.upsert_pod(cluster, PodInfo(f"bench-{n % 50}", node, n % 2)),
    )
    node_cost = per_call(
        20_000,
        lambda n: index.upsert_node(cluster, NodeInfo(node, "H100", gpus, schedulable=bool(n % 2))),
    )
    readings = tuple(
        GpuTelemetry(node, i, f"GPU-{node}-{i}", "NVIDIA H100 80GB HBM3", utilization_percent=0)
        for i in range(gpus)
    )
    telemetry_cost = per_call(
        5_000,
        lambda n: index.update_telemetry(
            cluster,
            TelemetrySnapshot(now + n * 1e-3, now + n * 1e-3, (NodeTelemetry(node, readings),)),
        ),
    )
    print(
        f"events: pod upsert {pod_cost * 1e6:.1f} us, node upsert {node_cost * 1e6:.1f} us, "
        f"telemetry {telemetry_cost * 1e6:.1f} us per node of {gpus} GPUs"
    )


def measure_drain(index: CapacityIndex, requests: list[JobRequest]) -> None:
    queue = PendingQueue()
    for request in requests:
        queue.push(request)
    with Stopwatch() as watch:
        result = queue.drain(index)
    print(
        f"drain of {len(requests)} queued jobs: {watch.wall:.2f} s wall, {watch.cpu:.2f} s CPU "
        f"({watch.cpu / len(requests) * 1000:.2f} ms CPU per job), {len(result.placed)} placed, "
        f"{len(result.waiting)} left waiting"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--decisions", type=int, default=200)
    parser.add_argument("--queue", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--no-freeze", action="store_true", help="skip gc.freeze() after build")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    now = time.time()

    gc.collect()
    tracemalloc.start()
    index, build_seconds = build(rng, args.members, args.nodes, args.gpus, now)
    gc.collect()
    index_bytes, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if not args.no_freeze:
        gc.freeze()

    total_nodes = args.members * args.nodes
    print(
        f"index: {args.members} members x {args.nodes} nodes x {args.gpus} GPUs = "
        f"{total_nodes:,} nodes, {total_nodes * args.gpus:,} GPUs"
    )
    print(
        f"  built from events in {build_seconds:.1f} s (under tracemalloc); memory "
        f"{index_bytes / 2**20:.1f} MiB ({index_bytes / total_nodes:.0f} B/node), peak while "
        f"feeding {peak_bytes / 2**20:.1f} MiB"
    )
    measure_decisions(index, jobs(rng, args.decisions, args.members))
    measure_events(index, args.gpus, now)
    measure_drain(index, jobs(rng, args.queue, args.members))


if __name__ == "__main__":
    main()
