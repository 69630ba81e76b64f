"""The controller around a training job's remote Job, with fakes: copies before the Job, pod
failures into status and the Event, and the TTL only once the outcome is recorded."""

from __future__ import annotations

from typing import Any

from suanli.api.computejob import ComputeJob
from suanli.kits.retry import RETRY_DELAYS
from tests.controller_fakes import FakeBilling, settle
from tests.test_controller_dispatch import UID, World, admitted_job, run

FAILED = {
    "startTime": "2026-11-21T09:00:00Z",
    "completionTime": "2026-11-21T09:00:10Z",
    "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
}
OOM_POD = {
    "metadata": {
        "name": "train-0-abc",
        "annotations": {"batch.kubernetes.io/job-completion-index": "0"},
    },
    "spec": {"nodeName": "gpu-3"},
    "status": {
        "phase": "Failed",
        "containerStatuses": [
            {"name": "main", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
        ],
    },
}


def job_with_secret() -> ComputeJob:
    job = admitted_job()
    job.spec.template["spec"]["containers"][0]["envFrom"] = [{"secretRef": {"name": "creds"}}]
    return job


def _remote(world: World) -> dict[str, Any]:
    (remote,) = world.link.jobs.values()
    return remote  # type: ignore[no-any-return]


def test_copies_are_made_before_the_job_and_kept_in_sync() -> None:
    async def test(world: World) -> None:
        world.hub.objects[("secrets", "tenant-a", "creds")] = {
            "metadata": {"name": "creds"},
            "type": "Opaque",
            "data": {"t": "MQ=="},
        }
        await world.dispatcher.job_seen(job_with_secret(), unwritten=True)
        await settle()
        remote = _remote(world)
        name = remote["metadata"]["name"]
        (copy,) = world.link.copies.values()
        assert copy["metadata"]["name"] == f"{name}-creds" and copy["data"] == {"t": "MQ=="}
        env_from = remote["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        assert env_from == [{"secretRef": {"name": f"{name}-creds"}}]
        # The tenant rotates the Secret: the next sync pass rewrites the copy.
        world.hub.objects[("secrets", "tenant-a", "creds")]["data"] = {"t": "Mg=="}
        await world.dispatcher.tenant_data.resync()
        (copy,) = world.link.copies.values()
        assert copy["data"] == {"t": "Mg=="}

    run(test, FakeBilling())


def test_a_failed_job_says_which_pod_failed_and_why() -> None:
    async def test(world: World) -> None:
        await world.dispatcher.job_seen(admitted_job(), unwritten=True)
        await settle()
        world.link.pods = [OOM_POD]
        world.link.report(UID, FAILED)
        await settle()
        final = world.hub.statuses("train")[-1]
        (failure,) = final["failures"]
        assert failure["exitCode"] == 137 and failure["oomKilled"] is True
        assert failure["node"] == "gpu-3" and failure["cluster"] == "member-a"
        (event,) = [e for e in world.hub.events if e["reason"] == "Failed"]
        assert "replica 0 (pod train-0-abc on node gpu-3 of member-a)" in event["message"]
        assert "exited with code 137 (OOMKilled)" in event["message"]

    run(test, FakeBilling())


def test_the_ttl_and_the_copies_removal_wait_for_the_recorded_outcome() -> None:
    billing = FakeBilling(failures=1)

    async def test(world: World) -> None:
        world.hub.objects[("secrets", "tenant-a", "creds")] = {"metadata": {"name": "creds"}}
        await world.dispatcher.job_seen(job_with_secret(), unwritten=True)
        await settle()
        world.link.report(UID, FAILED)
        await settle()
        # The first settle failed: the outcome is not recorded, the member keeps everything.
        assert "ttlSecondsAfterFinished" not in _remote(world)["spec"]
        assert world.link.copies
        await world.time.advance(RETRY_DELAYS[0])
        await settle()
        assert _remote(world)["spec"]["ttlSecondsAfterFinished"] == 3600
        assert world.link.copies == {}

    run(test, billing)
