"""The remote workload built for a ComputeJob: deterministic, labelled, GPU-pinned."""

from suanli.api.computejob import ComputeJob
from suanli.members.workload import (
    JOB_UID_LABEL,
    remote_job,
    remote_name,
    remote_namespace,
)


def make_job(name: str = "train", namespace: str = "tenant-a", **spec: object) -> ComputeJob:
    return ComputeJob.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace, "uid": "0123456789abcdef"},
            "spec": {
                "replicas": 4,
                "gpusPerReplica": 8,
                "maxRuntime": "2h",
                "template": {
                    "metadata": {"annotations": {"suanli.io/run-duration": "30s"}},
                    "spec": {"containers": [{"name": "main", "image": "x"}]},
                },
                **spec,
            },
        }
    )


def test_the_remote_job_runs_the_whole_gang_with_gpus_on_the_chosen_model() -> None:
    body = remote_job(make_job(), "nvidia.com/gpu", "NVIDIA-H100-80GB-HBM3")
    spec = body["spec"]
    assert spec["parallelism"] == spec["completions"] == 4
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 7200
    pod = spec["template"]["spec"]
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "8"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["restartPolicy"] == "Never"
    assert spec["template"]["metadata"]["labels"][JOB_UID_LABEL] == "0123456789abcdef"
    # The tenant's own annotations (kwok's run duration here) reach the pods.
    assert spec["template"]["metadata"]["annotations"]["suanli.io/run-duration"] == "30s"


def test_names_are_deterministic_and_bounded() -> None:
    job = make_job(name="a" * 63)
    assert remote_name(job) == remote_name(make_job(name="a" * 63))
    assert len(remote_name(job)) <= 63
    assert remote_namespace(make_job(namespace="b" * 63)).startswith("suanli-")
    assert len(remote_namespace(make_job(namespace="b" * 63))) <= 63
    assert remote_name(make_job(name="x")) != remote_name(make_job(name="y"))


def test_building_does_not_change_the_computejob() -> None:
    job = make_job()
    before = job.model_dump()
    remote_job(job, "nvidia.com/gpu", None)
    assert job.model_dump() == before
