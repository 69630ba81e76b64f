"""No free compute, with the controller's parts on fakes: a job deleted at any moment of its
dispatch leaves nothing on the member; a create that fails uses no attempt; a job that cannot
be placed fails and releases its hold rather than waiting for ever; a deleted job is charged
until its pods are gone and no longer; nothing the hub no longer has stays on a member."""

from __future__ import annotations

import asyncio
import copy
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from suanli import metrics
from suanli.api.computejob import ComputeJob
from suanli.api.names import COPY_LABEL, JOB_NAMESPACE_LABEL, JOB_UID_LABEL
from suanli.kits.retry import delay_after
from suanli.members.link import MemberLinkError
from suanli.members.workload import MANAGED_BY_LABEL, remote_name, remote_namespace
from tests.controller_fakes import FakeBilling, settle
from tests.test_controller_dispatch import MEMBER, UID, World, admitted_job, condition, member, run

SECRET = ("secrets", "tenant-a", "hf-token")


def member_named(name: str, price: str = "2.00") -> dict[str, Any]:
    body = member()
    body["metadata"] = {**body["metadata"], "name": name, "uid": f"uid-{name}"}
    body["spec"]["prices"] = [{"gpuModel": "H100", "pricePerGPUHour": price}]
    return body


def job_reading_a_secret(**template_env: Any) -> ComputeJob:
    body = admitted_job().model_dump(mode="json", by_alias=True, exclude_none=True)
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["envFrom"] = [{"secretRef": {"name": "hf-token"}, **template_env}]
    return ComputeJob.model_validate(body)


def with_token(world: World, data: dict[str, str] | None = None) -> None:
    world.hub.objects[SECRET] = {
        "metadata": {"name": "hf-token", "namespace": "tenant-a"},
        "data": data or {"HF_TOKEN": "c2VjcmV0"},
    }


@pytest.mark.parametrize("blocked", ["ensure_namespace", "apply_copy", "create_job"])
def test_a_job_deleted_mid_dispatch_leaves_nothing_on_its_member(blocked: str) -> None:
    async def test(world: World) -> None:
        with_token(world)
        link = world.link
        gate = asyncio.Event()
        real = getattr(link, blocked)

        async def held(body: Any) -> Any:
            await gate.wait()
            return await real(body)

        setattr(link, blocked, held)
        job = job_reading_a_secret()
        await world.dispatcher.job_seen(job, unwritten=True)
        await settle()
        assert world.hub.statuses("train")[-1]["phase"] == "Dispatched"

        deletion = asyncio.ensure_future(world.dispatcher.job_deleted(job))
        await settle()
        assert not deletion.done()  # it waits for the launch in flight, not beside it
        gate.set()
        await world.time.advance(5)
        await deletion
        assert link.jobs == {}
        assert link.copies == {}
        assert link.pod_deletions == [
            (link.namespaces[0]["metadata"]["name"], f"{JOB_UID_LABEL}={UID}", 30)
        ]
        assert not world.dispatcher.knows(UID)

    run(test, FakeBilling())


def test_a_member_that_refuses_the_workload_costs_no_attempt_and_the_job_fails_released() -> None:
    refused = metrics.DISPATCH_FAILURES.labels(MEMBER, "refused")

    async def test(world: World) -> None:
        async def refuse(body: Any) -> Any:
            raise MemberLinkError("admission webhook denied the request: no Jobs here", 403)

        world.link.create_job = refuse
        before = refused._value.get()
        await world.dispatcher.job_seen(admitted_job(), unwritten=True)
        await world.time.advance(5)
        final = world.hub.statuses("train")[-1]
        assert final["phase"] == "Failed"
        assert final["attempts"] == []  # nothing ran: no attempt recorded, nothing charged
        assert final["cluster"] is None
        finished = condition(final, "Finished")
        assert finished["reason"] == "DispatchFailed"
        assert "no Jobs here" in finished["message"] and MEMBER in finished["message"]
        assert condition(final, "Reserved")["status"] == "False"
        assert world.billing.charges == {UID: Decimal("0.00")}
        assert refused._value.get() == before + 1

    run(test, FakeBilling())


def test_a_refused_job_that_no_other_member_could_ever_take_fails_at_once() -> None:
    async def test(world: World) -> None:
        other = member_named("member-b")
        other["spec"]["prices"] = [{"gpuModel": "A800", "pricePerGPUHour": "1.00"}]
        await world.dispatcher.member_upsert(other)  # it does not price the H100 the job asks
        await settle()

        async def refuse(body: Any) -> Any:
            raise MemberLinkError("forbidden: jobs.batch is forbidden", 403)

        world.link.create_job = refuse
        await world.dispatcher.job_seen(admitted_job(), unwritten=True)
        await world.time.advance(2)
        final = world.hub.statuses("train")[-1]
        assert final["phase"] == "Failed" and final["attempts"] == []
        finished = condition(final, "Finished")
        assert finished["reason"] == "DispatchFailed"
        assert "no other member may run it" in finished["message"]

    run(test, FakeBilling())


def test_a_refusing_member_is_left_out_and_the_job_runs_on_another() -> None:
    async def test(world: World) -> None:
        await world.dispatcher.member_upsert(member_named("member-b"))
        await settle()
        refusals: list[str] = []
        for name, link in world.links.made.items():
            real = link.create_job

            async def refuse_first(body: Any, name: str = name, real: Any = real) -> Any:
                if not refusals:
                    refusals.append(name)
                    raise MemberLinkError("forbidden: jobs.batch is forbidden", 403)
                return await real(body)

            link.create_job = refuse_first
        await world.dispatcher.job_seen(admitted_job(), unwritten=True)
        await world.time.advance(delay_after(1) + 1)
        (refuser,) = refusals
        (other,) = set(world.links.made) - {refuser}
        placed = world.hub.statuses("train")[-1]
        assert placed["phase"] == "Dispatched" and placed["cluster"] == other
        (attempt,) = placed["attempts"]  # the refused one was dropped
        assert attempt["cluster"] == other
        assert world.links.made[other].job_of(UID)
        assert world.links.made[refuser].jobs == {}
        queued = [s for s in world.hub.statuses("train") if s["phase"] == "Queued"]
        assert condition(queued[0], "Dispatched")["reason"] == "RemoteRefused"

    run(test, FakeBilling())


def test_a_member_that_does_not_answer_is_tried_again_with_growing_delays_then_given_up() -> None:
    async def test(world: World) -> None:
        creates = 0

        async def unanswered(body: Any) -> Any:
            nonlocal creates
            creates += 1
            raise MemberLinkError("connection refused")

        world.link.create_job = unanswered
        await world.dispatcher.job_seen(admitted_job(), unwritten=True)
        await settle()
        assert creates == 1
        await world.time.advance(delay_after(1) - 0.5)
        assert creates == 1  # not before the back-off
        await world.time.advance(1.5)
        assert creates == 2
        await world.time.advance(delay_after(2) + 1)
        assert creates == 3
        final = world.hub.statuses("train")[-1]
        assert final["phase"] == "Failed" and final["attempts"] == []
        assert "gave up after 3 failed creates" in condition(final, "Finished")["message"]
        assert world.billing.charges == {UID: Decimal("0.00")}

    run(test, FakeBilling(), max_dispatch_failures=3)


def test_a_job_that_waits_longer_than_the_queue_timeout_fails_and_releases_its_hold() -> None:
    async def test(world: World) -> None:
        body = admitted_job().model_dump(mode="json", by_alias=True, exclude_none=True)
        body["spec"]["replicas"] = 64  # more GPUs than the member has free: it waits
        before = metrics.QUEUE_TIMEOUTS._value.get()
        await world.dispatcher.job_seen(ComputeJob.model_validate(body), unwritten=True)
        await world.time.advance(590)
        assert world.hub.statuses("train")[-1]["phase"] == "Queued"
        await world.time.advance(20)
        final = world.hub.statuses("train")[-1]
        assert final["phase"] == "Failed"
        finished = condition(final, "Finished")
        assert finished["reason"] == "QueueTimeout" and "10m" in finished["message"]
        assert condition(final, "Reserved")["status"] == "False"
        assert metrics.QUEUE_TIMEOUTS._value.get() == before + 1
        assert world.link.jobs == {}

    run(test, FakeBilling(), queue_timeout_seconds=600)


def placed_job() -> ComputeJob:
    """The job as an earlier life of the operator left it: placed on MEMBER, its remote Job
    not made yet."""
    job = admitted_job()
    body = job.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["status"].update(
        phase="Dispatched",
        cluster=MEMBER,
        remoteRef={
            "apiVersion": "batch/v1",
            "kind": "Job",
            "namespace": remote_namespace(job),
            "name": remote_name(job),
        },
        attempts=[
            {
                "cluster": MEMBER,
                "provider": "local",
                "region": "test",
                "gpuModel": "H100",
                "pricePerGPUHour": "2.00",
                "startTime": "2026-11-21T08:59:59Z",
            }
        ],
    )
    return ComputeJob.model_validate(body)


def test_a_job_placed_before_a_restart_waits_for_its_members_nodes_to_pin_its_workload() -> None:
    async def test(world: World) -> None:
        await world.dispatcher.job_seen(placed_job())
        await settle()
        link = world.link
        assert not world.dispatcher.fleet.nodes_listed(MEMBER)
        assert link.jobs == {}  # no Job without the affinity that pins it to the H100s
        link.nodes_listed()
        await settle()
        affinity = link.job_of(UID)["spec"]["template"]["spec"]["affinity"]
        assert affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]

    run(test, FakeBilling(), list_nodes=False)


async def deleted_after_running(world: World, seconds: int) -> asyncio.Future[None]:
    """The job runs ``seconds``, then is deleted while its pod still runs (a slow preStop
    hook); the deletion, in flight."""
    job = admitted_job()
    await world.dispatcher.job_seen(job, unwritten=True)
    await settle()
    world.link.report(UID, {"startTime": "2026-11-21T09:00:00Z", "active": 1, "ready": 1})
    world.time.now += timedelta(seconds=seconds)
    world.link.pods = [{"metadata": {"name": "p"}, "status": {"phase": "Running"}}]
    return asyncio.ensure_future(world.dispatcher.job_deleted(job))


def test_a_deleted_job_is_charged_until_its_pods_are_gone_and_no_longer() -> None:
    billing = FakeBilling()

    async def test(world: World) -> None:
        deletion = await deleted_after_running(world, 1800)
        await world.time.advance(10)
        assert not deletion.done()
        world.link.pods = []
        await world.time.advance(2)
        await deletion
        # 1800 s to the deletion and 11 s until the member said the pod was gone (polls a
        # second apart): 1811 s x 2 GPUs at 2.00 per GPU-hour.
        assert billing.charges == {UID: Decimal("2.01")}
        assert world.link.jobs == {}

    run(test, billing)


def test_a_deleted_jobs_charge_ends_at_its_grace_however_long_its_pods_stay() -> None:
    billing = FakeBilling()

    async def test(world: World) -> None:
        deletion = await deleted_after_running(world, 1800)
        await world.time.advance(120)
        await deletion
        # Charged to the deletion plus the grace of 30 s the member was told to give the pods:
        # 1830 s x 2 GPUs at 2.00 per GPU-hour, and nothing for the kubelet's lateness.
        assert billing.charges == {UID: Decimal("2.03")}

    run(test, billing)


def _managed(kind: str, namespace: str, name: str, uid: str, **labels: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {
            "namespace": namespace,
            "name": name,
            "labels": {MANAGED_BY_LABEL: "suanli", JOB_UID_LABEL: uid, **labels},
        },
    }


def test_the_orphan_sweep_removes_what_no_computejob_on_the_hub_holds() -> None:
    orphan = "9f9f9f9f-0000-4000-8000-000000000000"
    # A copy whose Job never landed (a crash between the two): the namespace sweep's.
    lone = "8e8e8e8e-0000-4000-8000-000000000000"
    removed = metrics.ORPHANS_REMOVED

    async def test(world: World) -> None:
        await world.dispatcher.job_seen(admitted_job(), unwritten=True)
        await settle()
        link = world.link
        namespace = link.namespaces[0]["metadata"]["name"]
        link.namespaces[0]["metadata"].setdefault("labels", {})[MANAGED_BY_LABEL] = "suanli"
        link.namespaces[0]["metadata"]["labels"][JOB_NAMESPACE_LABEL] = "tenant-a"
        planted = _managed("Job", namespace, "planted", orphan)
        link.jobs[(namespace, "planted")] = planted
        link.services.append(_managed("Service", namespace, "planted", orphan))
        link.copies[(namespace, "planted-token")] = _managed(
            "Secret", namespace, "planted-token", lone, **{COPY_LABEL: "true"}
        )
        live = _managed("Secret", namespace, "live-token", UID, **{COPY_LABEL: "true"})
        link.copies[(namespace, "live-token")] = live
        # The hub holds the live job only (as a page of the sweep's list says).
        world.hub.listed["computejobs"] = [
            {"metadata": {"uid": UID, "namespace": "tenant-a"}, "status": {"phase": "Running"}}
        ]
        jobs = removed.labels(MEMBER, "Job")._value.get()
        copies = removed.labels(MEMBER, "copy")._value.get()
        await world.dispatcher.orphans.sweep()
        assert (namespace, "planted") not in link.jobs
        assert link.job_of(UID)  # the live job's workload stays
        assert [s["metadata"]["name"] for s in link.services] == []
        assert list(link.copies) == [(namespace, "live-token")]
        assert (namespace, f"{JOB_UID_LABEL}={orphan}", 30) in link.pod_deletions
        assert removed.labels(MEMBER, "Job")._value.get() == jobs + 1
        assert removed.labels(MEMBER, "copy")._value.get() == copies + 1

    run(test, FakeBilling())


def test_the_orphan_sweep_keeps_a_job_it_follows_that_the_hubs_page_did_not_list() -> None:
    async def test(world: World) -> None:
        await world.dispatcher.job_seen(admitted_job(), unwritten=True)
        await settle()
        world.hub.listed["computejobs"] = []  # read before the job was admitted
        await world.dispatcher.orphans.sweep()
        assert world.link.job_of(UID)

    run(test, FakeBilling())


def test_a_remote_job_of_a_job_followed_elsewhere_is_removed_when_it_is_seen() -> None:
    async def test(world: World) -> None:
        await world.dispatcher.member_upsert(member_named("member-b", price="3.00"))
        await settle()
        await world.dispatcher.job_seen(admitted_job(), unwritten=True)
        await world.time.advance(1)  # the least interval between two passes
        remote = copy.deepcopy(world.link.job_of(UID))
        other = world.links.made["member-b"]
        metadata = remote["metadata"]
        # A create on member-b that timed out and landed all the same: member-b reports it.
        other.jobs[(metadata["namespace"], metadata["name"])] = remote
        world.dispatcher.job_event("member-b", "ADDED", remote)
        await settle()
        assert other.jobs == {}
        assert world.link.job_of(UID)  # where it is followed, it stays

    run(test, FakeBilling())


def test_a_source_that_gains_a_device_variable_is_not_copied_and_the_job_is_told_once() -> None:
    refused = metrics.TENANT_DATA_REFUSED

    async def test(world: World) -> None:
        with_token(world)
        job = job_reading_a_secret()
        await world.dispatcher.job_seen(job, unwritten=True)
        await settle()
        world.link.report(UID, {"startTime": "2026-11-21T09:00:00Z", "active": 1, "ready": 1})
        await settle()
        (copied,) = world.link.copies.values()
        before = refused._value.get()
        with_token(world, {"HF_TOKEN": "c2VjcmV0", "NVIDIA_VISIBLE_DEVICES": "YWxs"})
        await world.dispatcher.tenant_data.resync()
        await world.dispatcher.tenant_data.resync()
        assert list(world.link.copies.values()) == [copied]  # its earlier content stays
        assert refused._value.get() == before + 2
        (event,) = [e for e in world.hub.events if e["reason"] == "TenantDataRefused"]
        assert "NVIDIA_VISIBLE_DEVICES" in event["message"] and event["warning"]

    run(test, FakeBilling())


def test_a_dispatch_whose_source_sets_a_device_variable_makes_no_workload() -> None:
    async def test(world: World) -> None:
        with_token(world, {"NVIDIA_VISIBLE_DEVICES": "YWxs"})
        await world.dispatcher.job_seen(job_reading_a_secret(), unwritten=True)
        await settle()
        assert world.link.jobs == {} and world.link.copies == {}
        queued = world.hub.statuses("train")[-1]
        assert queued["phase"] == "Queued" and queued["attempts"] == []
        assert "NVIDIA_VISIBLE_DEVICES" in condition(queued, "Dispatched")["message"]

    run(test, FakeBilling())
