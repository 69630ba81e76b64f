"""What a training job becomes on a member: rendezvous, tenant data copies, failures explained."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from suanli.api.computejob import MAX_FAILURES, ComputeJob
from suanli.api.names import CONTENT_HASH_ANNOTATION, COPY_LABEL, JOB_UID_LABEL
from suanli.api.references import (
    DataKind,
    data_errors,
    template_references,
    unportable_errors,
)
from suanli.members.copies import content_hash, data_copy
from suanli.members.failures import describe, pod_failure, pod_failures
from suanli.members.rendezvous import COMPLETION_INDEX_ANNOTATION, service_name
from suanli.members.workload import copy_name, gang_service, job_labels, remote_job, remote_name


def make_job(replicas: int = 3, name: str = "train", **pod: Any) -> ComputeJob:
    return ComputeJob.model_validate(
        {
            "metadata": {"name": name, "namespace": "tenant-a", "uid": "0123456789abcdef"},
            "spec": {
                "replicas": replicas,
                "gpusPerReplica": 8,
                "maxRuntime": "2h",
                "template": {"spec": {"containers": [{"name": "main", "image": "x"}], **pod}},
            },
        }
    )


# --- rendezvous ---------------------------------------------------------------------------------


def test_a_gangs_pods_get_the_services_subdomain_and_torchrun_variables() -> None:
    job = make_job(replicas=3)
    name = remote_name(job)
    pod = remote_job(job, "nvidia.com/gpu", None)["spec"]["template"]["spec"]
    assert pod["subdomain"] == service_name(name)
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    master = f"{name}-0.{service_name(name)}.suanli-tenant-a.svc"
    assert env["MASTER_ADDR"]["value"] == env["PET_MASTER_ADDR"]["value"] == master
    assert env["NNODES"]["value"] == "3" and env["NPROC_PER_NODE"]["value"] == "8"
    assert env["WORLD_SIZE"]["value"] == "24" and env["MASTER_PORT"]["value"] == "29500"
    rank = env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert rank == f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"


def test_a_variable_the_tenant_sets_is_kept() -> None:
    job = make_job(
        containers=[
            {"name": "main", "image": "x", "env": [{"name": "MASTER_PORT", "value": "1234"}]}
        ]
    )
    env = remote_job(job, "nvidia.com/gpu", None)["spec"]["template"]["spec"]["containers"][0][
        "env"
    ]
    assert [e["value"] for e in env if e["name"] == "MASTER_PORT"] == ["1234"]


def test_a_single_replica_gets_no_service_and_no_rendezvous() -> None:
    job = make_job(replicas=1)
    pod = remote_job(job, "nvidia.com/gpu", None)["spec"]["template"]["spec"]
    assert "subdomain" not in pod and "env" not in pod["containers"][0]
    assert gang_service(job, "job-uid") is None


def test_the_headless_service_selects_the_gang_and_is_owned_by_its_job() -> None:
    job = make_job()
    service = gang_service(job, "job-uid")
    assert service is not None
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {JOB_UID_LABEL: "0123456789abcdef"}
    (owner,) = service["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": remote_name(job),
        "uid": "job-uid",
    }


@given(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True))
def test_names_fit_dns_whatever_the_jobs_name(name: str) -> None:
    job = make_job(name=name)
    job_name = remote_name(job)
    # Hosts are <job>-<index> (index up to six digits), the Service a DNS-1035 label.
    assert len(f"{job_name}-999999") <= 63
    service = service_name(job_name)
    assert len(service) <= 63 and service[0].isalpha() and not service.endswith("-")


# --- tenant data --------------------------------------------------------------------------------

DATA_POD: dict[str, Any] = {
    "imagePullSecrets": [{"name": "pull"}],
    "containers": [
        {
            "name": "main",
            "image": "x",
            "env": [
                {"name": "A", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "a"}}},
                {
                    "name": "B",
                    "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "b", "optional": True}},
                },
            ],
            "envFrom": [{"secretRef": {"name": "creds"}}, {"configMapRef": {"name": "cfg"}}],
        }
    ],
    "volumes": [
        {"name": "s", "secret": {"secretName": "certs"}},
        {"name": "c", "configMap": {"name": "cfg"}},
        {
            "name": "p",
            "projected": {
                "sources": [{"secret": {"name": "proj"}}, {"configMap": {"name": "pcfg"}}]
            },
        },
    ],
}


def test_every_reference_is_found_with_its_field() -> None:
    found = {(r.kind, r.name, r.path, r.optional) for r in template_references({"spec": DATA_POD})}
    base = "spec.template.spec"
    assert found == {
        (DataKind.SECRET, "pull", f"{base}.imagePullSecrets[0].name", False),
        (
            DataKind.SECRET,
            "creds",
            f"{base}.containers[0].env[0].valueFrom.secretKeyRef.name",
            False,
        ),
        (
            DataKind.CONFIG_MAP,
            "cfg",
            f"{base}.containers[0].env[1].valueFrom.configMapKeyRef.name",
            True,
        ),
        (DataKind.SECRET, "creds", f"{base}.containers[0].envFrom[0].secretRef.name", False),
        (DataKind.CONFIG_MAP, "cfg", f"{base}.containers[0].envFrom[1].configMapRef.name", False),
        (DataKind.SECRET, "certs", f"{base}.volumes[0].secret.secretName", False),
        (DataKind.CONFIG_MAP, "cfg", f"{base}.volumes[1].configMap.name", False),
        (DataKind.SECRET, "proj", f"{base}.volumes[2].projected.sources[0].secret.name", False),
        (
            DataKind.CONFIG_MAP,
            "pcfg",
            f"{base}.volumes[2].projected.sources[1].configMap.name",
            False,
        ),
    }


def test_the_remote_template_names_the_jobs_copies_everywhere() -> None:
    job = make_job(replicas=1, **DATA_POD)
    name = remote_name(job)
    template = remote_job(job, "nvidia.com/gpu", None)["spec"]["template"]
    names = {r.name for r in template_references(template)}
    assert names == {copy_name(name, n) for n in ("pull", "creds", "cfg", "certs", "proj", "pcfg")}


def test_a_missing_required_reference_is_named_and_an_optional_one_is_not() -> None:
    references = template_references(
        {
            "spec": {
                "containers": [
                    {
                        "name": "m",
                        "envFrom": [
                            {"secretRef": {"name": "gone"}},
                            {"configMapRef": {"name": "maybe", "optional": True}},
                        ],
                    }
                ]
            }
        }
    )
    (error,) = data_errors(references, {})
    assert error.path == "spec.template.spec.containers[0].envFrom[0].secretRef.name"
    assert "Secret 'gone' does not exist" in error.message


def test_a_service_account_token_secret_is_not_copied() -> None:
    references = template_references({"spec": {"imagePullSecrets": [{"name": "tok"}]}})
    (error,) = data_errors(
        references, {(DataKind.SECRET, "tok"): "kubernetes.io/service-account-token"}
    )
    assert (
        error.path == "spec.template.spec.imagePullSecrets[0].name"
        and "not copied" in error.message
    )
    with pytest.raises(ValueError, match="not copied"):
        data_copy(
            DataKind.SECRET,
            {"metadata": {"name": "tok"}, "type": "kubernetes.io/service-account-token"},
            job_name="j",
            namespace="n",
            labels={},
        )


def test_a_persistent_volume_claim_is_refused() -> None:
    (error,) = unportable_errors(
        {"spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "x"}}]}}
    )
    assert error.path == "spec.template.spec.volumes[0].persistentVolumeClaim"


def test_a_copy_carries_the_data_and_the_jobs_labels_only() -> None:
    job = make_job()
    source = {
        "metadata": {"name": "creds", "labels": {"team": "x"}, "annotations": {"a": "b"}},
        "type": "Opaque",
        "data": {"k": "dg=="},
    }
    body = data_copy(
        DataKind.SECRET, source, job_name="j-1", namespace="suanli-t", labels=job_labels(job)
    )
    assert body["metadata"]["name"] == "j-1-creds"
    assert body["metadata"]["labels"] == {**job_labels(job), COPY_LABEL: "true"}
    assert "team" not in body["metadata"]["labels"]
    assert body["type"] == "Opaque" and body["data"] == {"k": "dg=="}
    assert body["metadata"]["annotations"][CONTENT_HASH_ANNOTATION] == content_hash(
        DataKind.SECRET, source
    )
    changed = {**source, "data": {"k": "dw=="}}
    assert content_hash(DataKind.SECRET, changed) != content_hash(DataKind.SECRET, source)


# --- failures -----------------------------------------------------------------------------------


def _pod(index: int, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"j-{index}-x",
            "annotations": {COMPLETION_INDEX_ANNOTATION: str(index)},
        },
        "spec": {"nodeName": f"node-{index}"},
        "status": status,
    }


def _terminated(code: int, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "phase": "Failed",
        "containerStatuses": [
            {
                "name": "main",
                "state": {"terminated": {"exitCode": code, "reason": reason, "message": message}},
            }
        ],
    }


def test_an_oom_killed_container_is_explained() -> None:
    failure = pod_failure(_pod(1, _terminated(137, "OOMKilled", "CUDA out of memory")), "member-a")
    assert failure is not None
    assert (failure.replica, failure.node, failure.container) == (1, "node-1", "main")
    assert (failure.exit_code, failure.reason, failure.oom_killed) == (137, "OOMKilled", True)
    text = describe(failure)
    assert "replica 1" in text and "node-1" in text and "exited with code 137 (OOMKilled)" in text
    assert "raise resources.limits.memory" in text


def test_a_pod_failed_without_a_container_gives_the_pods_reason() -> None:
    pod = _pod(0, {"phase": "Failed", "reason": "Evicted", "message": "node low on memory"})
    failure = pod_failure(pod, "m")
    assert failure is not None and failure.reason == "Evicted" and failure.exit_code is None
    assert failure.message == "node low on memory"


def test_succeeded_and_running_pods_are_not_failures() -> None:
    assert pod_failure(_pod(0, _terminated(0, "Completed") | {"phase": "Succeeded"}), "m") is None
    assert pod_failure(_pod(0, {"phase": "Running"}), "m") is None


def test_failures_are_bounded_lowest_replica_first_with_the_messages_tail() -> None:
    long = "x" * 5000 + "the real error"
    pods = [_pod(i, _terminated(1, "Error", long)) for i in reversed(range(20))]
    failures = pod_failures(pods, "m")
    assert [f.replica for f in failures] == list(range(MAX_FAILURES))
    message = failures[0].message or ""
    assert len(message) <= 512 and message.endswith("the real error")
