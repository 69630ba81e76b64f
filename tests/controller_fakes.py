"""Fakes for the controller's parts: a hub, member links, billing and time, all in memory.

No cluster and no wall clock: :class:`ManualTime` is the parts' clock, monotonic clock and
sleep, and time moves only when a test calls :meth:`ManualTime.advance`; :func:`settle` runs
the event loop until the tasks in it have nothing left to do but wait.
"""

from __future__ import annotations

import asyncio
import copy
import heapq
import itertools
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import yaml

from suanli.api.names import JOB_UID_LABEL
from suanli.controller.charging import AttemptCost, JobCharge, RecordBilling
from suanli.controller.ports import Obj
from suanli.controller.status import AttemptRecord, JobIdentity, JobStatus
from suanli.kube import NotFoundError
from suanli.members.link import LinkEvents

START = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


async def settle(rounds: int = 200) -> None:
    """Let every ready task run until all of them wait (on time, or on an event)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class ManualTime:
    """A clock that moves only when told to, and the sleep that goes with it."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now
        self.slept: list[float] = []
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return (self.now - _EPOCH).total_seconds()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        due = self.now + timedelta(seconds=seconds)
        heapq.heappush(self._sleepers, (due, next(self._order), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move the clock on by ``seconds``, waking each sleeper at its time, in order."""
        target = self.now + timedelta(seconds=seconds)
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            due, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, due)
            if not future.done():
                future.set_result(None)
            await settle()
        self.now = target
        await settle()


class HubError(Exception):
    """What the fake hub raises when told to fail (a 504, say)."""


@dataclass
class FakeHub:
    """Status patches kept in order, Events kept, Secrets served; fails writes on demand."""

    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    """Core objects by (plural, namespace, name): the tenant data core_get serves."""
    patches: list[tuple[str, str | None, str, dict[str, Any]]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    fail_writes: int = 0
    listed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Objects by plural, as list_pages serves them (the orphan sweep's ComputeJobs)."""

    async def list_pages(
        self, plural: str, namespace: str | None = None, *, limit: int
    ) -> AsyncIterator[list[dict[str, Any]]]:
        items = copy.deepcopy(self.listed.get(plural, []))
        for start in range(0, len(items), limit):
            yield items[start : start + limit]

    async def patch_status(
        self, plural: str, namespace: str | None, name: str, patch: Mapping[str, Any]
    ) -> Any:
        if self.fail_writes:
            self.fail_writes -= 1
            raise HubError("the hub's API server timed out (504)")
        self.patches.append((plural, namespace, name, copy.deepcopy(dict(patch))))
        return dict(patch)

    async def event(
        self, regarding: Mapping[str, Any], *, reason: str, message: str, warning: bool = False
    ) -> None:
        self.events.append(
            {"regarding": regarding, "reason": reason, "message": message, "warning": warning}
        )

    async def secret(self, namespace: str, name: str) -> dict[str, str]:
        return dict(self.secrets[(namespace, name)])

    async def core_get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        try:
            return copy.deepcopy(self.objects[(plural, namespace, name)])
        except KeyError:
            raise NotFoundError(f"{plural} {namespace}/{name}") from None

    def statuses(self, name: str) -> list[dict[str, Any]]:
        """The status each write of job ``name`` sent, in order."""
        return [patch["status"] for plural, _, n, patch in self.patches if n == name]


def kubeconfig(server: str = "https://127.0.0.1:1") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "m", "cluster": {"server": server}}],
            "users": [{"name": "hub", "user": {"token": "t"}}],
            "contexts": [{"name": "m", "context": {"cluster": "m", "user": "hub"}}],
            "current-context": "m",
        }
    )


def gpu_node(name: str, gpus: int = 8, product: str = "NVIDIA-H100-80GB-HBM3") -> Obj:
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product}},
        "spec": {},
        "status": {
            "capacity": {"nvidia.com/gpu": str(gpus)},
            "allocatable": {"nvidia.com/gpu": str(gpus)},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def selects(selector: str, labels: Mapping[str, str]) -> bool:
    """Whether a label selector of ``k=v`` and ``k notin (a,b)`` terms selects ``labels``."""
    for term in _terms(selector):
        if " notin " in term:
            key, values = term.split(" notin ", 1)
            if labels.get(key) in values.strip("()").split(","):
                return False
        else:
            key, value = term.split("=", 1)
            if labels.get(key) != value:
                return False
    return True


def _terms(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    return [*terms, current] if current else terms


class FakeLink:
    """A member in memory: Jobs in a dict, and the reports a MemberLink's watches would make."""

    def __init__(
        self, name: str, events: LinkEvents, nodes: list[Obj], *, list_nodes: bool = True
    ) -> None:
        self.name = name
        self.list_nodes = list_nodes
        """Whether start() lists the nodes; False: a test calls :meth:`nodes_listed` itself."""
        self.events = events
        self.nodes = nodes
        self.jobs: dict[tuple[str, str], Obj] = {}
        self.namespaces: list[Obj] = []
        self.deleted: list[tuple[str, str]] = []
        self.services: list[Obj] = []
        self.copies: dict[tuple[str, str], Obj] = {}
        self.pods: list[Obj] = []  # what list_pods answers
        self.pod_deletions: list[tuple[str, str, int]] = []
        self.fail_deletes = 0
        self.synced = False
        self.credentials_refused: str | None = None
        self.stopped = False

    async def start(self) -> None:
        self.events.on_reachability(self.name, True, "ok")
        if self.list_nodes:
            self.events.on_nodes_synced(self.name, self.nodes)
        self.events.on_pods_synced(self.name, [])
        self.events.on_jobs_synced(self.name, list(self.jobs.values()))
        self.synced = True

    async def stop(self) -> None:
        self.stopped = True

    async def ensure_namespace(self, body: Obj) -> None:
        self.namespaces.append(body)

    async def create_job(self, body: Obj) -> Obj:
        metadata = body["metadata"]
        key = (metadata["namespace"], metadata["name"])
        self.jobs.setdefault(key, copy.deepcopy(body))
        self.events.on_job(self.name, "ADDED", copy.deepcopy(self.jobs[key]))
        return self.jobs[key]

    async def get_job(self, namespace: str, name: str) -> Obj | None:
        job = self.jobs.get((namespace, name))
        return copy.deepcopy(job) if job is not None else None

    async def set_job_ttl(self, namespace: str, name: str, seconds: int) -> bool:
        job = self.jobs.get((namespace, name))
        if job is None:
            return False
        job.setdefault("spec", {})["ttlSecondsAfterFinished"] = seconds
        return True

    async def create_service(self, body: Obj) -> None:
        self.services.append(copy.deepcopy(body))

    async def apply_copy(self, body: Obj) -> None:
        metadata = body["metadata"]
        self.copies[(metadata["namespace"], metadata["name"])] = copy.deepcopy(body)

    async def delete_copies(self, namespace: str, selector: str) -> int:
        deleted = 0
        for key, body in list(self.copies.items()):
            labels = body["metadata"].get("labels") or {}
            if key[0] == namespace and selects(selector, labels):
                del self.copies[key]
                deleted += 1
        return deleted

    async def delete_pods(self, namespace: str, selector: str, grace_seconds: int) -> None:
        self.pod_deletions.append((namespace, selector, grace_seconds))
        self.pods = [
            pod for pod in self.pods if not selects(selector, pod["metadata"].get("labels") or {})
        ]

    async def list_jobs(self) -> list[Obj]:
        return copy.deepcopy(list(self.jobs.values()))

    async def list_services(self, selector: str) -> list[Obj]:
        return [
            copy.deepcopy(s)
            for s in self.services
            if selects(selector, s["metadata"].get("labels") or {})
        ]

    async def delete_service(self, namespace: str, name: str) -> None:
        self.services = [
            s
            for s in self.services
            if (s["metadata"]["namespace"], s["metadata"]["name"]) != (namespace, name)
        ]

    async def list_namespaces(self, selector: str) -> list[Obj]:
        return [
            copy.deepcopy(n)
            for n in self.namespaces
            if selects(selector, n["metadata"].get("labels") or {})
        ]

    async def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        return copy.deepcopy(self.pods)

    async def delete_job(self, namespace: str, name: str) -> bool:
        if self.fail_deletes:
            self.fail_deletes -= 1
            raise ConnectionError(f"member {self.name} does not answer")
        self.deleted.append((namespace, name))
        return self.jobs.pop((namespace, name), None) is not None

    def nodes_listed(self) -> None:
        """The member's Nodes watch delivers its first list."""
        self.events.on_nodes_synced(self.name, self.nodes)

    def job_of(self, uid: str) -> Obj:
        (job,) = [j for j in self.jobs.values() if j["metadata"]["labels"][JOB_UID_LABEL] == uid]
        return job

    def report(self, uid: str, status: Obj) -> None:
        """The Job controller updated the Job's status; the watch reports it."""
        job = self.job_of(uid)
        job["status"] = status
        self.events.on_job(self.name, "MODIFIED", copy.deepcopy(job))

    def report_pod(self, uid: str, status: Obj) -> None:
        metadata = {"name": f"{uid}-pod", "namespace": "x", "uid": f"pod-{uid}"}
        pod: Obj = {
            "metadata": {**metadata, "labels": {JOB_UID_LABEL: uid}},
            "spec": {"containers": []},
            "status": status,
        }
        self.events.on_pod(self.name, "MODIFIED", pod)


@dataclass
class FakeLinks:
    """The link factory: one FakeLink per member, kept by name."""

    nodes: list[Obj] = field(default_factory=lambda: [gpu_node("gpu-1")])
    made: dict[str, FakeLink] = field(default_factory=dict)
    list_nodes: bool = True

    def __call__(
        self, name: str, kubeconfig: str, events: LinkEvents, telemetry: tuple[str, ...]
    ) -> FakeLink:
        link = FakeLink(name, events, self.nodes, list_nodes=self.list_nodes)
        self.made[name] = link
        return link


@dataclass
class FakeBilling:
    """Prices as the operator does (the pure part of RecordBilling); records and settles in
    memory, and fails its first ``failures`` settles, as a voucher write refused with a 429
    would."""

    failures: int = 0
    settles: int = 0
    records: int = 0
    charges: dict[str, Decimal] = field(default_factory=dict)
    _pricing: RecordBilling = field(
        default_factory=lambda: RecordBilling(_NoRecords(), _no_ledgers, lambda ns, name: "CNY")
    )

    def attempt_cost(
        self,
        status: JobStatus,
        attempt: AttemptRecord | None,
        *,
        start: datetime,
        end: datetime,
        gpus: int,
    ) -> AttemptCost:
        return self._pricing.attempt_cost(status, attempt, start=start, end=end, gpus=gpus)

    def job_charge(self, status: JobStatus) -> JobCharge:
        return self._pricing.job_charge(status)

    async def record(self, job: JobIdentity, status: JobStatus, *, gpus: int) -> JobCharge:
        self.records += 1
        return self.job_charge(status)

    async def settle(
        self, job: JobIdentity, status: JobStatus, *, gpus: int, close: bool
    ) -> JobCharge:
        self.settles += 1
        if self.failures:
            self.failures -= 1
            raise HubError("the voucher's write was refused: 429 Too Many Requests")
        charge = self.job_charge(status)
        if close:
            self.charges.setdefault(job.uid, charge.amount)  # exactly once, as the ledger does
        return charge


class _NoRecords:
    async def create(self, plural: str, body: Any) -> dict[str, Any]:
        raise AssertionError("FakeBilling never writes a record")


def _no_ledgers(namespace: str, name: str) -> Any:
    raise AssertionError("FakeBilling never writes a ledger")


class Tasks:
    """The spawner the parts are given: keeps each task, so a test can cancel them all."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.failures: list[BaseException] = []

    def __call__(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failures.append(task.exception())  # type: ignore[arg-type]

    def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()
