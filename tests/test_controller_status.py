"""What the controller keeps of a job in flight: enough to make the same remote Job, and a
typed status whose wire form is the API's."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from suanli.api.computejob import ComputeJob, ComputeJobStatus, JobPhase
from suanli.api.reasons import JobConditionType
from suanli.controller.status import AttemptRecord, JobStatus, TrackedJob
from suanli.dispatch.models import JobRequest
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
        return TrackedJob.of(job, request, JobStatus.from_model(job.status), written=True)

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
    assert identity.job_key == "tenant-a/train"
    model = tracked.model()
    kept = model.metadata.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)
    assert set(kept) == {"name", "namespace", "uid", "generation", "creationTimestamp"}
    assert model.status.phase is None


def _full_status() -> ComputeJobStatus:
    return ComputeJobStatus.model_validate(
        {
            "phase": "Running",
            "observedGeneration": 2,
            "totalGPUs": 8,
            "voucher": "budget",
            "cluster": "member-a",
            "remoteRef": {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "namespace": "suanli-tenant-a",
                "name": "train-0f4e7c1a",
            },
            "reservation": "120.50",
            "estimatedCost": "120.50",
            "startTime": "2026-11-21T09:00:05Z",
            "attempts": [
                {
                    "cluster": "member-b",
                    "gpuModel": "A100",
                    "pricePerGPUHour": "1.50",
                    "startTime": "2026-11-21T08:00:00Z",
                    "endTime": "2026-11-21T08:10:00Z",
                    "reason": "MemberLost",
                    "message": "member member-b stopped answering",
                    "gpuSeconds": 4800,
                    "charge": "2.00",
                },
                {
                    "cluster": "member-a",
                    "gpuModel": "H100",
                    "pricePerGPUHour": "2.00",
                    "startTime": "2026-11-21T09:00:00Z",
                },
            ],
            "failures": [
                {
                    "replica": 1,
                    "pod": "train-1-abcde",
                    "cluster": "member-a",
                    "node": "gpu-7",
                    "container": "main",
                    "reason": "OOMKilled",
                    "exitCode": 137,
                    "oomKilled": True,
                    "message": "CUDA out of memory",
                }
            ],
            "conditions": [
                {
                    "type": "Reserved",
                    "status": "True",
                    "reason": "VoucherReserved",
                    "message": "Reserved 120.50",
                    "lastTransitionTime": "2026-11-21T07:59:00Z",
                },
                {
                    "type": "Dispatched",
                    "status": "True",
                    "reason": "Placed",
                    "message": "on member-a",
                    "lastTransitionTime": "2026-11-21T09:00:00Z",
                    "observedGeneration": 2,
                },
            ],
        }
    )


def test_the_wire_form_is_the_apis_own_dump() -> None:
    model = _full_status()
    wire = JobStatus.from_model(model).to_wire()
    assert wire == model.model_dump(mode="json", by_alias=True, exclude_none=True)


def test_an_unplaced_job_sends_null_cluster_and_reference_so_the_merge_patch_drops_them() -> None:
    status = JobStatus.from_model(_full_status())
    status.cluster = None
    status.remote_ref = None
    status.phase = JobPhase.QUEUED
    wire = status.to_wire()
    assert wire["cluster"] is None and wire["remoteRef"] is None
    assert wire["phase"] == "Queued"
    new = JobStatus.from_model(ComputeJobStatus.model_validate({}))
    assert new.to_wire() == {
        "cluster": None,
        "remoteRef": None,
        "attempts": [],
        "failures": [],
        "conditions": [],
    }


def test_the_record_reads_back_what_it_wrote() -> None:
    status = JobStatus.from_model(_full_status())
    status.charged_cost = Decimal("3.25")
    status.gpu_seconds = 12
    status.attempts[-1].end_time = datetime(2026, 11, 21, 9, 30, 0, 999, tzinfo=UTC)
    again = JobStatus.from_model(ComputeJobStatus.model_validate(status.to_wire()))
    assert again.to_wire() == status.to_wire()
    assert again.attempts[-1].end_time == datetime(2026, 11, 21, 9, 30, tzinfo=UTC)


def test_a_copy_is_edited_without_touching_the_original() -> None:
    status = JobStatus.from_model(_full_status())
    before = status.to_wire()
    copy = status.copy()
    copy.attempts[-1].reason = "Failed"
    copy.set_condition(
        JobConditionType.DISPATCHED,
        False,
        "RemoteCreateFailed",
        "no",
        now=datetime(2026, 11, 21, 10, tzinfo=UTC),
        generation=2,
    )
    copy.attempts.append(AttemptRecord(cluster="member-c"))
    assert status.to_wire() == before


def test_the_status_record_has_slots() -> None:
    status = JobStatus()
    assert not hasattr(status, "__dict__")
    assert not hasattr(AttemptRecord(cluster="x"), "__dict__")
