"""The pending queue: jobs that fit nowhere now, and the order they go out in when GPUs free.

Order
    1. Priority, higher first: strict across levels.
    2. Within a priority level, fair across tenants (namespaces): the next job comes from the
       tenant holding the fewest GPUs, counting what it already runs (``held``, given by the
       caller) plus what this pass has placed for it. Every placement raises its tenant's
       count, so a burst of one tenant alternates with others' jobs instead of going first in
       a block, and a tenant already running much waits behind one running little. Equal
       holdings go to the tenant whose oldest queued job is older.
    3. Within a tenant, first come, first served (submission time, then arrival in the queue).

Backfill, bounded
    A job that does not fit does not stop the jobs behind it: a small job may use GPUs a large
    gang ahead of it cannot use yet (or cannot use at all: another model, another region).
    Strict order would keep them idle. Unbounded backfill, though, starves large gangs: small
    jobs keep taking every GPU that frees. So each waiting job counts how often a job behind
    it was placed on capacity it could have used (a (cluster, model) pair it passes every
    filter on). At ``bypass_limit`` such overtakes it starts to block: from then on the pairs it
    waits on are held for it, and jobs behind it may only use capacity it could not use. GPUs
    then accumulate on its pairs until it fits. Jobs ahead of it still go first.

:meth:`PendingQueue.drain` walks the queue in that order, decides each job against the index,
and assumes every placement in the index before deciding the next job, so one pass never places
more than there is. The caller then records each placement and creates the remote workloads
(forgetting the assumption if that fails, and pushing the job back).

Like the index, the queue is for one asyncio event loop. A drain over a long queue and a large
federation takes seconds of CPU; :meth:`PendingQueue.drain_async` lets other tasks run between
decisions, each decide-and-assume still being one uninterrupted step.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Final

from suanli.dispatch.capacity import Assumption, CapacityIndex
from suanli.dispatch.models import JobRequest, VoucherTerms
from suanli.dispatch.policy import Decision, Pair, decide

DEFAULT_BYPASS_LIMIT: Final = 8
DEFAULT_DECISIONS_PER_TURN: Final = 16


@dataclass(frozen=True)
class Placed:
    """A job the drain placed; its GPUs are assumed in the index under ``job.key``."""

    job: JobRequest
    decision: Decision
    assumption: Assumption


@dataclass(frozen=True)
class DrainResult:
    placed: tuple[Placed, ...]
    """In the order they were placed."""
    waiting: Mapping[str, Decision]
    """Every job still queued, by key, in queue order, with why it waits."""


class _Entry:
    __slots__ = ("bypassed", "job", "sequence")

    def __init__(self, job: JobRequest, sequence: int) -> None:
        self.job = job
        self.sequence = sequence
        self.bypassed = 0


# Jobs that differ in nothing placement reads; a failed decision holds for all of them within
# one pass, because capacity only shrinks and held pairs only grow during a pass.
_Shape = tuple[
    int, int, frozenset[str], frozenset[str], frozenset[str], str, VoucherTerms | None, int
]


def _shape(job: JobRequest, blocked: int) -> _Shape:
    return (
        job.replicas,
        job.gpus_per_replica,
        job.gpu_models,
        job.clusters,
        job.regions,
        job.policy,
        job.voucher,
        blocked,
    )


class PendingQueue:
    """Jobs waiting for capacity (see the module notes for the order and backfill rule).

    Args:
        bypass_limit: Overtakes a waiting job tolerates before the capacity it waits on is
            held for it; 0 makes the queue strictly ordered per (cluster, model).
    """

    def __init__(self, *, bypass_limit: int = DEFAULT_BYPASS_LIMIT) -> None:
        self.bypass_limit = bypass_limit
        self._entries: dict[str, _Entry] = {}
        self._sequence = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def push(self, job: JobRequest) -> None:
        """Queue ``job``; a job already queued under its key is updated and keeps its place."""
        entry = self._entries.get(job.key)
        if entry is not None:
            entry.job = job
            return
        self._sequence += 1
        self._entries[job.key] = _Entry(job, self._sequence)

    def remove(self, key: str) -> JobRequest | None:
        """Take a job out (deleted, or placed by other means); returns it if it was queued."""
        entry = self._entries.pop(key, None)
        return None if entry is None else entry.job

    def oldest_submitted_at(self) -> float | None:
        """When the longest-waiting job was submitted (epoch seconds); None when none waits."""
        return min((entry.job.submitted_at for entry in self._entries.values()), default=None)

    def get(self, key: str) -> JobRequest | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.job

    def bypassed(self, key: str) -> int:
        """How often jobs behind this one were placed on capacity it could have used."""
        entry = self._entries.get(key)
        return 0 if entry is None else entry.bypassed

    def ordered(self, held: Mapping[str, int] | None = None) -> list[JobRequest]:
        """The queue in the order a drain would try it if everything fitted (for positions)."""
        tally = dict(held or {})
        order: list[JobRequest] = []
        for entry in self._walk(tally):
            order.append(entry.job)
            tally[entry.job.tenant] = tally.get(entry.job.tenant, 0) + entry.job.total_gpus
        return order

    def drain(self, index: CapacityIndex, *, held: Mapping[str, int] | None = None) -> DrainResult:
        """Place, in order, every queued job that fits now; assume each placement as it goes.

        Args:
            index: Live capacity; each placement is assumed in it under the job's key.
            held: GPUs each tenant holds now (its dispatched and running jobs), for fairness.
        """
        steps = self._drain_steps(index, held)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                result: DrainResult = done.value
                return result

    async def drain_async(
        self,
        index: CapacityIndex,
        *,
        held: Mapping[str, int] | None = None,
        decisions_per_turn: int = DEFAULT_DECISIONS_PER_TURN,
    ) -> DrainResult:
        """:meth:`drain`, letting the event loop run other tasks every few decisions.

        A decision over a thousand members takes milliseconds, so a long queue drained in one
        go would hold up every other handler. Here each decide-and-assume is still one step
        that nothing can interleave with; between steps other tasks may change the index (the
        next decision sees it) and the queue (a job removed meanwhile is skipped, one pushed
        meanwhile waits for the next drain).
        """
        steps = self._drain_steps(index, held)
        taken = 0
        while True:
            try:
                next(steps)
            except StopIteration as done:
                result: DrainResult = done.value
                return result
            taken += 1
            if taken % decisions_per_turn == 0:
                await asyncio.sleep(0)

    def _drain_steps(
        self, index: CapacityIndex, held: Mapping[str, int] | None
    ) -> Generator[None, None, DrainResult]:
        """One pass of a drain; yields after each job it decides."""
        tally = dict(held or {})
        placed: list[Placed] = []
        waiting: dict[str, Decision] = {}
        blocked: dict[Pair, str] = {}
        watchers: dict[Pair, list[_Entry]] = {}
        failed: dict[_Shape, Decision] = {}

        def block(entry: _Entry) -> None:
            for pair in waiting[entry.job.key].waiting_on:
                blocked.setdefault(pair, entry.job.name)

        for entry in self._walk(tally):
            job = entry.job
            if self._entries.get(job.key) is not entry:
                continue  # removed while the drain let other tasks run
            shape = _shape(job, len(blocked))
            decision = failed.get(shape)
            if decision is not None:
                decision = replace(decision, job=job.key)
            else:
                decision = decide(job, index, held=blocked)
            choice = decision.choice
            if choice is None:
                failed.setdefault(shape, decision)
                waiting[job.key] = decision
                for pair in decision.waiting_on:
                    watchers.setdefault(pair, []).append(entry)
                if entry.bypassed >= self.bypass_limit:
                    block(entry)
            else:
                assumption = index.assume(job.key, choice.cluster, choice.gpus_by_node)
                del self._entries[job.key]
                placed.append(Placed(job, decision, assumption))
                tally[job.tenant] = tally.get(job.tenant, 0) + job.total_gpus
                for overtaken in watchers.get(choice.pair, ()):
                    overtaken.bypassed += 1
                    if overtaken.bypassed == self.bypass_limit and overtaken.job.key in waiting:
                        block(overtaken)
            yield
        ordered = {key: waiting[key] for key in self._entries if key in waiting}
        return DrainResult(placed=tuple(placed), waiting=ordered)

    def _walk(self, held: dict[str, int]) -> Iterator[_Entry]:
        """Every entry once, in queue order.

        ``held`` is read again after each entry is handled: the caller adds what it placed for
        the entry's tenant before asking for the next one.
        """
        levels: dict[int, dict[str, list[_Entry]]] = {}
        for entry in self._entries.values():
            tenants = levels.setdefault(entry.job.priority, {})
            tenants.setdefault(entry.job.tenant, []).append(entry)
        for priority in sorted(levels, reverse=True):
            queues = {
                tenant: deque(sorted(entries, key=_fifo))
                for tenant, entries in levels[priority].items()
            }
            turns = [_turn(held, tenant, queue) for tenant, queue in queues.items()]
            heapq.heapify(turns)
            while turns:
                tenant = heapq.heappop(turns)[-1]
                queue = queues[tenant]
                yield queue.popleft()
                if queue:
                    heapq.heappush(turns, _turn(held, tenant, queue))


def _fifo(entry: _Entry) -> tuple[float, int]:
    return (entry.job.submitted_at, entry.sequence)


def _turn(
    held: Mapping[str, int], tenant: str, queue: Iterable[_Entry]
) -> tuple[int, float, int, str]:
    head = next(iter(queue))
    return (held.get(tenant, 0), head.job.submitted_at, head.sequence, tenant)
