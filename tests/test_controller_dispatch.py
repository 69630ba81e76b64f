"""The controller's parts built with fakes (no cluster, no wall clock), driving one job from
its admission record through placement, the remote Job, Running and Complete, a first settle
that fails, its retry, and the charge."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from suanli import metrics
from suanli.api.computejob import ComputeJob
from suanli.controller.dispatcher import Dispatcher
from suanli.kits.retry import RETRY_DELAYS
from suanli.options import OperatorOptions
from tests.controller_fakes import (
    FakeBilling,
    FakeHub,
    FakeLinks,
    ManualTime,
    Tasks,
    kubeconfig,
    settle,
)

UID = "0f4e7c1a-5b2d-4c3e-9a8b-1d2c3e4f5a6b"
MEMBER = "member-a"


def member() -> dict[str, Any]:
    return {
        "apiVersion": "suanli.io/v1alpha1",
        "kind": "MemberCluster",
        "metadata": {"name": MEMBER, "uid": "m-1", "generation": 1},
        "spec": {
            "region": "test",
            "provider": "local",
            "kubeconfigSecretRef": {"name": "x", "namespace": "ns", "key": "kubeconfig"},
            "prices": [{"gpuModel": "H100", "pricePerGPUHour": "2.00"}],
        },
    }


def admitted_job(uid: str = UID, name: str = "train") -> ComputeJob:
    """A job as the admission handler hands it over: its admission record not written."""
    return ComputeJob.model_validate(
        {
            "metadata": {
                "name": name,
                "namespace": "tenant-a",
                "uid": uid,
                "generation": 1,
                "creationTimestamp": "2026-11-21T08:59:59Z",
            },
            "spec": {
                "replicas": 1,
                "gpusPerReplica": 2,
                "gpuModels": ["H100"],
                "maxRuntime": "1h",
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "main", "image": "trainer:1"}],
                    }
                },
            },
            "status": {
                "phase": "Pending",
                "voucher": "budget",
                "totalGPUs": 2,
                "reservation": "4.00",
                "estimatedCost": "4.00",
                "conditions": [
                    {
                        "type": "Reserved",
                        "status": "True",
                        "reason": "VoucherReserved",
                        "message": "Reserved 4.00 CNY on voucher budget",
                        "lastTransitionTime": "2026-11-21T08:59:59Z",
                    }
                ],
            },
        }
    )


class World:
    """A dispatcher wired to fakes, started, with one member connected."""

    def __init__(self, billing: FakeBilling, **options: Any) -> None:
        self.time = ManualTime()
        self.hub = FakeHub(secrets={("ns", "x"): {"kubeconfig": kubeconfig()}})
        self.links = FakeLinks()
        self.billing = billing
        self.tasks = Tasks()
        self.dispatcher = Dispatcher(
            options=OperatorOptions(**options),
            hub=self.hub,
            billing=billing,
            vouchers=lambda namespace, name: None,
            spawn=self.tasks,
            clock=self.time.clock,
            sleep=self.time.sleep,
            monotonic=self.time.monotonic,
            link_factory=self.links,
        )

    @property
    def link(self) -> Any:
        return self.links.made[MEMBER]


def run(
    test: Callable[[World], Awaitable[None]],
    billing: FakeBilling,
    *,
    list_nodes: bool = True,
    **options: Any,
) -> None:
    """Run ``test`` in a started world; ``list_nodes``: whether the member's link lists its
    Nodes when it starts (False: the test says when)."""

    async def main() -> None:
        world = World(billing, **options)
        world.links.list_nodes = list_nodes
        world.dispatcher.start()
        await world.dispatcher.member_upsert(member())
        try:
            await test(world)
        finally:
            await world.dispatcher.stop()
            world.tasks.cancel()
            await settle()
        assert world.tasks.failures == []

    asyncio.run(main())


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in status["conditions"] if c["type"] == kind]
    (only,) = found
    return only


def test_a_job_is_placed_run_and_charged_once_though_its_first_settle_fails() -> None:
    billing = FakeBilling(failures=1)
    errors = metrics.BACKGROUND_TASK_ERRORS.labels("job-close")

    async def test(world: World) -> None:
        dispatcher, hub = world.dispatcher, world.hub
        await dispatcher.job_seen(admitted_job(), unwritten=True)
        await settle()

        # Placed: one write records the choice and carries the admission record with it.
        (dispatched,) = hub.statuses("train")
        assert dispatched["phase"] == "Dispatched"
        assert dispatched["cluster"] == MEMBER
        assert dispatched["voucher"] == "budget" and dispatched["reservation"] == "4.00"
        (attempt,) = dispatched["attempts"]
        assert attempt == {
            "cluster": MEMBER,
            "provider": "local",
            "region": "test",
            "gpuModel": "H100",
            "pricePerGPUHour": "2.00",
            "startTime": "2026-11-21T09:00:00Z",
        }
        assert condition(dispatched, "Dispatched")["status"] == "True"
        assert condition(dispatched, "Reserved")["status"] == "True"
        # ...and only then the remote Job, in the tenant's namespace on the member.
        remote = world.link.job_of(UID)
        assert dispatched["remoteRef"]["name"] == remote["metadata"]["name"]
        assert world.link.namespaces
        # The admission record's own write is not needed any more once the grace has passed.
        await world.time.advance(1.0)
        assert len(hub.statuses("train")) == 1

        # Running once every replica is ready.
        world.link.report(UID, {"startTime": "2026-11-21T09:00:02Z", "active": 1, "ready": 1})
        await settle()
        running = hub.statuses("train")[-1]
        assert running["phase"] == "Running"
        assert running["startTime"] == "2026-11-21T09:00:02Z"

        # Complete after an hour: the usage is recorded and the job's status says it ended,
        # but the voucher's write fails.
        before = errors._value.get()
        await world.time.advance(3600)
        done = {
            "startTime": "2026-11-21T09:00:02Z",
            "completionTime": "2026-11-21T10:00:02Z",
            "succeeded": 1,
            "conditions": [{"type": "Complete", "status": "True"}],
        }
        world.link.report(UID, done)
        await settle()
        assert billing.settles == 1 and billing.charges == {}
        assert errors._value.get() == before + 1
        said = hub.statuses("train")[-1]
        assert (said["phase"], said["chargedCost"]) == ("Succeeded", "4.00")
        tracked = dispatcher.book.get(UID)
        assert tracked is not None and tracked.ended  # not forgotten, not followed either
        assert dispatcher.knows(UID)

        # A late echo of the Job does not start a second close.
        world.link.report(UID, done)
        await settle()
        assert billing.settles == 1

        # The retry, after the first delay: the charge lands, then the final status.
        await world.time.advance(RETRY_DELAYS[0])
        assert billing.settles == 2
        # 3600 s x 2 GPUs at 2.00 per GPU-hour.
        assert billing.charges == {UID: Decimal("4.00")}
        final = hub.statuses("train")[-1]
        assert final["phase"] == "Succeeded"
        assert final["chargedCost"] == "4.00"
        assert final["reservation"] == "0.00"
        assert final["gpuSeconds"] == 7200
        assert final["completionTime"] == "2026-11-21T10:00:02Z"
        assert final["attempts"][0]["charge"] == "4.00"
        assert final["attempts"][0]["reason"] == "Succeeded"
        assert condition(final, "Charged")["status"] == "True"
        assert condition(final, "Reserved")["status"] == "False"
        assert condition(final, "Finished")["reason"] == "Succeeded"
        # A first placement and a success are in the conditions; no Event repeats them.
        assert [e["reason"] for e in hub.events] == []
        assert dispatcher.book.get(UID) is None and dispatcher.knows(UID)

        # Nothing more: no further settle, whatever time passes or the member says.
        world.link.report(UID, done)
        await world.time.advance(120)
        assert billing.settles == 2 and len(billing.charges) == 1

    run(test, billing)


def test_a_close_whose_status_write_fails_is_retried_with_growing_delays() -> None:
    billing = FakeBilling(failures=2)

    async def test(world: World) -> None:
        await world.dispatcher.job_seen(admitted_job(), unwritten=True)
        await settle()
        done = {
            "startTime": "2026-11-21T09:00:00Z",
            "completionTime": "2026-11-21T09:00:10Z",
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
        }
        world.link.report(UID, done)
        await settle()
        await world.time.advance(RETRY_DELAYS[0])
        assert billing.settles == 2 and billing.charges == {}
        # The job's status says it failed from the first try on: no attempt can start again.
        assert world.hub.statuses("train")[-1]["phase"] == "Failed"
        world.hub.fail_writes = 1  # now the status write fails: the voucher is not asked
        await world.time.advance(RETRY_DELAYS[1])
        assert billing.settles == 2 and billing.charges == {}
        await world.time.advance(RETRY_DELAYS[2])
        assert billing.settles == 3  # it lands, once
        assert billing.charges == {UID: Decimal("0.01")}
        final = world.hub.statuses("train")[-1]
        assert final["phase"] == "Failed" and final["chargedCost"] == "0.01"
        close_delays = [d for d in world.time.slept if d in RETRY_DELAYS and d > 1.0]
        assert close_delays[:2] == [2.0, 5.0]

    run(test, billing)


def test_a_job_deleted_while_its_charge_is_retried_is_charged_by_its_finalizer_once() -> None:
    billing = FakeBilling(failures=1)

    async def test(world: World) -> None:
        job = admitted_job()
        await world.dispatcher.job_seen(job, unwritten=True)
        await settle()
        world.link.report(
            UID,
            {
                "startTime": "2026-11-21T09:00:00Z",
                "completionTime": "2026-11-21T09:30:00Z",
                "conditions": [{"type": "Complete", "status": "True"}],
            },
        )
        await settle()
        assert billing.settles == 1 and billing.charges == {}
        world.time.now += timedelta(hours=5)  # the end was recorded; this time is not charged
        await world.dispatcher.job_deleted(job)
        assert billing.charges == {UID: Decimal("2.00")}  # 1800 s x 2 GPUs at 2.00
        await world.time.advance(60)
        assert billing.settles == 2  # the close loop saw the job gone and stopped
        assert not world.dispatcher.knows(UID)

    run(test, billing)


def test_a_job_whose_pods_stay_unschedulable_is_withdrawn_though_the_member_fails_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors = metrics.BACKGROUND_TASK_ERRORS.labels("watchdog")

    async def test(world: World) -> None:
        await world.dispatcher.job_seen(admitted_job(), unwritten=True)
        await settle()
        world.link.report_pod(
            UID,
            {
                "phase": "Pending",
                "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
                ],
            },
        )
        world.link.fail_deletes = 3
        before = errors._value.get()
        await world.time.advance(120)
        for _ in range(3):  # the watchdog fails each second while the member fails
            await world.time.advance(1.0)
        assert errors._value.get() == before + 3
        assert caplog.text.count("watchdog failed") == 1  # logged once, not every second
        await world.time.advance(1.0)  # and it is still there once the member answers
        (withdrawn,) = [s for s in world.hub.statuses("train") if s["phase"] == "Queued"]
        assert withdrawn["cluster"] is None and withdrawn["remoteRef"] is None
        assert withdrawn["attempts"][0]["reason"] == "WithdrawnUnschedulable"
        assert withdrawn["attempts"][0]["charge"] == "0.00"
        assert world.link.deleted
        # With no other member to go to, it is placed there again: a second attempt.
        again = world.hub.statuses("train")[-1]
        assert again["phase"] == "Dispatched" and len(again["attempts"]) == 2

    run(test, FakeBilling(), unschedulable_seconds=120)


def test_the_dispatch_pass_and_the_metrics_go_on_after_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    errors = metrics.BACKGROUND_TASK_ERRORS.labels("dispatch")

    async def test(world: World) -> None:
        placement = world.dispatcher.placement
        real = placement.queue.drain_async
        calls = 0

        async def broken(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug in one pass")
            return await real(*args, **kwargs)

        monkeypatch.setattr(placement.queue, "drain_async", broken)
        before = errors._value.get()
        await world.dispatcher.job_seen(admitted_job(), unwritten=True)
        await settle()
        assert errors._value.get() == before + 1 and world.hub.statuses("train") == []
        await world.time.advance(1.0)  # the pass a second runs again, and it places the job
        assert world.hub.statuses("train")[0]["phase"] == "Dispatched"
        assert all(not task.done() for task in world.dispatcher._loops)

    run(test, FakeBilling())


def test_the_wait_of_the_oldest_queued_job_is_published() -> None:
    async def test(world: World) -> None:
        body = admitted_job().model_dump(mode="json", by_alias=True, exclude_none=True)
        body["spec"]["replicas"] = 64  # more GPUs than the member has: it waits
        job = ComputeJob.model_validate(body)
        await world.dispatcher.job_seen(job, unwritten=True)
        await settle()
        world.dispatcher.publish_metrics()
        created = job.metadata.creation_timestamp
        assert created is not None
        waited = (world.time.now - created).total_seconds()
        assert metrics.QUEUE_DEPTH._value.get() == 1
        assert metrics.QUEUE_OLDEST_SECONDS._value.get() == waited > 0

        await world.dispatcher.job_deleted(job)
        await settle()
        world.dispatcher.publish_metrics()
        assert metrics.QUEUE_OLDEST_SECONDS._value.get() == 0

    run(test, FakeBilling())
