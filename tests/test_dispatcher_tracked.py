"""What the dispatcher keeps of a job in flight is enough to make the same remote Job."""

from __future__ import annotations

import asyncio
from typing import Any

from suanli.api.computejob import ComputeJob
from suanli.dispatch.models import JobRequest
from suanli.handlers.dispatcher import TrackedJob
from suanli.members.workload import ModelPin, remote_job, remote_name, remote_namespace


def _stored_job() -> ComputeJob:
    body: dict[str, Any] = {
        "apiVersion": "suanli.io/v1alpha1",
        "kind": "ComputeJob",
        "metadata": {
            "name": "train",
            "namespace": "tenant-a",
            "uid": "0f4e7c1a-5b2d-4c3e-9a8b-1d2c3e4f5a6b",
            "generation": 2,
            "creationTimestamp": "2026-11-21T09:00:00Z",
            "resourceVersion": "4711",
            "labels": {"team": "vision"},
            "managedFields": [{"manager": "kubectl", "operation": "Update"}],
        },
        "spec": {
            "replicas": 2,
            "gpusPerReplica": 4,
            "gpuModels": ["H100", "A100"],
            "maxRuntime": "3h",
            "priority": 5,
            "voucherRef": {"name": "budget"},
            "template": {
                "metadata": {"annotations": {"note": '日本語 and "quotes"'}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "trainer:1", "args": ["--lr=3e-4"]}],
                },
            },
        },
        "status": {"phase": "Pending", "voucher": "budget", "totalGPUs": 8},
    }
    return ComputeJob.model_validate(body)


def _tracked(job: ComputeJob) -> TrackedJob:
    async def make() -> TrackedJob:  # its write lock wants an event loop
        request = JobRequest.from_computejob(job, None, key=job.metadata.uid or "")
        return TrackedJob.of(job, request, {"phase": "Pending"}, written=True)

    return asyncio.run(make())


def test_the_remote_job_made_from_a_tracked_job_is_the_one_made_from_the_stored_job() -> None:
    job = _stored_job()
    model = _tracked(job).model()
    assert model.spec == job.spec
    pin = ModelPin(product_values=frozenset({"NVIDIA-H100"}))
    assert remote_job(model, "nvidia.com/gpu", pin) == remote_job(job, "nvidia.com/gpu", pin)
    assert (remote_namespace(model), remote_name(model)) == (
        remote_namespace(job),
        remote_name(job),
    )


def test_a_tracked_job_keeps_its_identity_not_its_metadata_or_status() -> None:
    tracked = _tracked(_stored_job())
    identity = tracked.identity
    assert (identity.namespace, identity.name, identity.generation) == ("tenant-a", "train", 2)
    assert identity.ledger_key == "tenant-a/train"
    model = tracked.model()
    kept = model.metadata.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)
    assert set(kept) == {"name", "namespace", "uid", "generation", "creationTimestamp"}
    assert model.status.phase is None
