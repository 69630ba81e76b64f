"""Validation: a table of bad objects and the field paths their errors must name.

Each case starts from a valid object built here, changes it, and runs the kind's whole check
(pydantic parsing, then ``validate_<kind>``), as the admission webhook will. Paths are the
contract; messages are only checked for naming the limit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from suanli.api.computejob import ComputeJob, validate_computejob
from suanli.api.kinds import kind_named, validate_manifest
from suanli.api.membercluster import MemberCluster, validate_membercluster
from suanli.api.validation import FieldError, format_errors, join_path
from suanli.api.voucherquota import VoucherQuota, validate_voucherquota

# --- builders -----------------------------------------------------------------------------------


def job() -> dict[str, Any]:
    return {
        "apiVersion": "suanli.io/v1alpha1",
        "kind": "ComputeJob",
        "metadata": {"name": "train", "namespace": "tenant-acme"},
        "spec": {
            "replicas": 2,
            "gpusPerReplica": 4,
            "gpuModels": ["H100", "A800"],
            "maxRuntime": "2h",
            "voucherRef": {"name": "acme-2026"},
            "placement": {"clusters": ["member-a"], "regions": ["shanghai-pudong"]},
            "template": {
                "metadata": {"annotations": {"suanli.io/run-duration": "30s"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "main", "image": "busybox", "resources": {"limits": {"cpu": 1}}},
                        {"name": "sidecar", "image": "busybox"},
                    ],
                },
            },
        },
    }


def voucher() -> dict[str, Any]:
    return {
        "apiVersion": "suanli.io/v1alpha1",
        "kind": "VoucherQuota",
        "metadata": {"name": "acme-2026", "namespace": "tenant-acme"},
        "spec": {
            "amount": "50000.00",
            "currency": "CNY",
            "validFrom": "2026-01-01T00:00:00+08:00",
            "validUntil": "2027-01-01T00:00:00+08:00",
            "limits": {"maxGPUsPerJob": 32, "maxConcurrentGPUs": 64, "maxRuntime": "24h"},
            "allowedClusters": ["member-a", "member-b"],
            "allowedGPUModels": ["H100"],
            "creditLine": 1000,
        },
    }


def member() -> dict[str, Any]:
    return {
        "apiVersion": "suanli.io/v1alpha1",
        "kind": "MemberCluster",
        "metadata": {"name": "member-b"},
        "spec": {
            "kubeconfigSecretRef": {"name": "member-b-kubeconfig", "namespace": "suanli-system"},
            "region": "shanghai-lingang",
            "prices": [
                {"gpuModel": "A800", "pricePerGPUHour": "16.80"},
                {"gpuModel": "L40S", "pricePerGPUHour": 7},
            ],
            "telemetryEndpoints": ["https://member-b.example.invalid:9400/metrics"],
        },
        "status": {
            "gpus": [
                {"model": "A800", "total": 16, "allocatable": 16, "free": 8},
                {"model": "L40S", "total": 8, "allocatable": 8, "free": 8},
            ]
        },
    }


BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    "ComputeJob": job,
    "VoucherQuota": voucher,
    "MemberCluster": member,
}

_DELETE = object()


def changed(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``data`` with dotted paths set (``a.b[0].c``); ``_DELETE`` removes."""
    result = copy.deepcopy(data)
    for path, value in changes.items():
        parts: list[str | int] = []
        for part in path.split("."):
            name, *indexes = part.split("[")
            parts.append(name)
            parts += [int(index.rstrip("]")) for index in indexes]
        target: Any = result
        for key in parts[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[parts[-1]]
        else:
            target[parts[-1]] = value
    return result


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    changes: dict[str, Any]
    paths: list[str]
    mentions: list[str] = field(default_factory=list)

    def data(self) -> dict[str, Any]:
        return changed(BUILDERS[self.kind](), self.changes)


def container(**fields: Any) -> dict[str, Any]:
    return {"name": "main", "image": "busybox", **fields}


CASES = [
    # ComputeJob: what the schema says, reported through from_validation_error
    Case("job-replicas-zero", "ComputeJob", {"spec.replicas": 0}, ["spec.replicas"], ["1"]),
    Case("job-replicas-too-many", "ComputeJob", {"spec.replicas": 65}, ["spec.replicas"], ["64"]),
    Case("job-gpus-too-many", "ComputeJob", {"spec.gpusPerReplica": 17}, ["spec.gpusPerReplica"]),
    Case(
        "job-gpus-string", "ComputeJob", {"spec.gpusPerReplica": "eight"}, ["spec.gpusPerReplica"]
    ),
    Case("job-priority", "ComputeJob", {"spec.priority": 5000}, ["spec.priority"], ["1000"]),
    Case("job-typo", "ComputeJob", {"spec.replica": 2}, ["spec.replica"], ["unknown field"]),
    Case("job-missing-template", "ComputeJob", {"spec.template": _DELETE}, ["spec.template"]),
    Case("job-missing-runtime", "ComputeJob", {"spec.maxRuntime": _DELETE}, ["spec.maxRuntime"]),
    Case("job-runtime-go-style", "ComputeJob", {"spec.maxRuntime": "1.5h"}, ["spec.maxRuntime"]),
    Case("job-runtime-days", "ComputeJob", {"spec.maxRuntime": "2d"}, ["spec.maxRuntime"]),
    Case(
        "job-bad-model",
        "ComputeJob",
        {"spec.gpuModels": ["H100", "NVIDIA H100 80GB"]},
        ["spec.gpuModels[1]"],
    ),
    Case(
        "job-too-many-models",
        "ComputeJob",
        {"spec.gpuModels": [f"M{i}" for i in range(17)]},
        ["spec.gpuModels"],
        ["16"],
    ),
    Case(
        "job-bad-policy",
        "ComputeJob",
        {"spec.placement.policy": "Fastest"},
        ["spec.placement.policy"],
    ),
    Case(
        "job-bad-cluster-name",
        "ComputeJob",
        {"spec.placement.clusters": ["Member_A"]},
        ["spec.placement.clusters[0]"],
    ),
    Case(
        "job-voucher-ref-string",
        "ComputeJob",
        {"spec.voucherRef": "acme-2026"},
        ["spec.voucherRef"],
    ),
    Case("job-template-not-object", "ComputeJob", {"spec.template": "pod.yaml"}, ["spec.template"]),
    # ComputeJob: rules of validate_computejob
    Case(
        "job-gang-too-big",
        "ComputeJob",
        {"spec.replicas": 64, "spec.gpusPerReplica": 16},
        ["spec.gpusPerReplica"],
        ["1024", "256"],
    ),
    Case("job-runtime-zero", "ComputeJob", {"spec.maxRuntime": "0s"}, ["spec.maxRuntime"]),
    Case(
        "job-runtime-above-cap",
        "ComputeJob",
        {"spec.maxRuntime": "721h"},
        ["spec.maxRuntime"],
        ["720h"],
    ),
    Case(
        "job-duplicate-model",
        "ComputeJob",
        {"spec.gpuModels": ["H100", "A800", "H100"]},
        ["spec.gpuModels[2]"],
        ["H100"],
    ),
    Case(
        "job-duplicate-cluster",
        "ComputeJob",
        {"spec.placement.clusters": ["member-a", "member-a"]},
        ["spec.placement.clusters[1]"],
    ),
    Case(
        "job-duplicate-region",
        "ComputeJob",
        {"spec.placement.regions": ["shanghai", "shanghai"]},
        ["spec.placement.regions[1]"],
    ),
    Case("job-name-not-label", "ComputeJob", {"metadata.name": "train.v2"}, ["metadata.name"]),
    Case(
        "job-template-no-spec",
        "ComputeJob",
        {"spec.template": {"metadata": {}}},
        ["spec.template.spec"],
    ),
    Case(
        "job-template-metadata",
        "ComputeJob",
        {"spec.template.metadata": ["x"]},
        ["spec.template.metadata"],
    ),
    Case(
        "job-no-containers",
        "ComputeJob",
        {"spec.template.spec.containers": []},
        ["spec.template.spec.containers"],
        ["at least one"],
    ),
    Case(
        "job-containers-missing",
        "ComputeJob",
        {"spec.template.spec.containers": _DELETE},
        ["spec.template.spec.containers"],
    ),
    Case(
        "job-container-not-object",
        "ComputeJob",
        {"spec.template.spec.containers": ["main"]},
        ["spec.template.spec.containers[0]"],
    ),
    Case(
        "job-container-no-image",
        "ComputeJob",
        {"spec.template.spec.containers[1]": {"name": "sidecar"}},
        ["spec.template.spec.containers[1].image"],
    ),
    Case(
        "job-container-bad-name",
        "ComputeJob",
        {"spec.template.spec.containers[0].name": "Main"},
        ["spec.template.spec.containers[0].name"],
    ),
    Case(
        "job-container-duplicate-name",
        "ComputeJob",
        {"spec.template.spec.containers[1].name": "main"},
        ["spec.template.spec.containers[1].name"],
        ["duplicate"],
    ),
    Case(
        "job-gpu-limit",
        "ComputeJob",
        {
            "spec.template.spec.containers[0]": container(
                resources={"limits": {"nvidia.com/gpu": 8, "cpu": 4}}
            )
        },
        ["spec.template.spec.containers[0].resources.limits[nvidia.com/gpu]"],
        ["gpusPerReplica"],
    ),
    Case(
        "job-gpu-request-mig",
        "ComputeJob",
        {
            "spec.template.spec.containers[0]": container(
                resources={"requests": {"nvidia.com/mig-1g.10gb": 1}}
            )
        },
        ["spec.template.spec.containers[0].resources.requests[nvidia.com/mig-1g.10gb]"],
    ),
    # ComputeJob: the pod policy (tests/test_api_podpolicy.py has its table), reached through
    # validate_computejob as the webhook reaches it
    Case(
        "job-init-container-gpu",
        "ComputeJob",
        {
            "spec.template.spec.initContainers": [
                container(resources={"limits": {"huawei.com/Ascend910B": 8}})
            ]
        },
        ["spec.template.spec.initContainers[0].resources.limits[huawei.com/Ascend910B]"],
        ["gpusPerReplica"],
    ),
    Case(
        "job-privileged-host-network",
        "ComputeJob",
        {
            "spec.template.spec.hostNetwork": True,
            "spec.template.spec.containers[1]": container(
                name="sidecar", securityContext={"privileged": True}
            ),
        },
        [
            "spec.template.spec.hostNetwork",
            "spec.template.spec.containers[1].securityContext.privileged",
        ],
    ),
    Case(
        "job-steering",
        "ComputeJob",
        {
            "spec.template.spec.tolerations": [{"operator": "Exists"}],
            "spec.template.spec.nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100"},
        },
        [
            "spec.template.spec.tolerations",
            "spec.template.spec.nodeSelector[nvidia.com/gpu.product]",
        ],
        ["toleration"],
    ),
    Case(
        "job-device-env",
        "ComputeJob",
        {"spec.template.spec.containers[0].env": [{"name": "NVIDIA_VISIBLE_DEVICES"}]},
        ["spec.template.spec.containers[0].env[0].name"],
    ),
    Case(
        "job-restart-always",
        "ComputeJob",
        {"spec.template.spec.restartPolicy": "Always"},
        ["spec.template.spec.restartPolicy"],
        ["Never", "OnFailure"],
    ),
    Case(
        "job-several-problems",
        "ComputeJob",
        {"spec.maxRuntime": "0s", "spec.template.spec.containers": []},
        ["spec.maxRuntime", "spec.template.spec.containers"],
    ),
    # VoucherQuota
    Case("voucher-float-amount", "VoucherQuota", {"spec.amount": 12.5}, ["spec.amount"], ["quote"]),
    Case("voucher-three-decimals", "VoucherQuota", {"spec.amount": "1.005"}, ["spec.amount"]),
    Case("voucher-negative", "VoucherQuota", {"spec.amount": -5}, ["spec.amount"]),
    Case(
        "voucher-amount-zero",
        "VoucherQuota",
        {"spec.amount": "0.00"},
        ["spec.amount"],
        ["greater than 0"],
    ),
    Case("voucher-missing-amount", "VoucherQuota", {"spec.amount": _DELETE}, ["spec.amount"]),
    Case("voucher-currency", "VoucherQuota", {"spec.currency": "yuan"}, ["spec.currency"]),
    Case(
        "voucher-missing-until", "VoucherQuota", {"spec.validUntil": _DELETE}, ["spec.validUntil"]
    ),
    Case(
        "voucher-zoneless-time",
        "VoucherQuota",
        {"spec.validUntil": "2027-01-01T00:00:00"},
        ["spec.validUntil"],
    ),
    Case(
        "voucher-until-before-from",
        "VoucherQuota",
        {"spec.validUntil": "2025-12-31T00:00:00+08:00"},
        ["spec.validUntil"],
        ["validFrom"],
    ),
    Case(
        "voucher-until-equals-from",
        "VoucherQuota",
        {"spec.validUntil": "2025-12-31T16:00:00Z"},
        ["spec.validUntil"],
    ),
    Case(
        "voucher-limits-runtime-zero",
        "VoucherQuota",
        {"spec.limits.maxRuntime": "0s"},
        ["spec.limits.maxRuntime"],
    ),
    Case(
        "voucher-limits-runtime-cap",
        "VoucherQuota",
        {"spec.limits.maxRuntime": "1000h"},
        ["spec.limits.maxRuntime"],
        ["720h"],
    ),
    Case(
        "voucher-limits-gpus-per-job",
        "VoucherQuota",
        {"spec.limits.maxGPUsPerJob": 512},
        ["spec.limits.maxGPUsPerJob"],
        ["256"],
    ),
    Case(
        "voucher-per-job-above-concurrent",
        "VoucherQuota",
        {"spec.limits.maxGPUsPerJob": 128, "spec.limits.maxConcurrentGPUs": 64},
        ["spec.limits.maxGPUsPerJob"],
        ["64"],
    ),
    Case(
        "voucher-limits-typo",
        "VoucherQuota",
        {"spec.limits.maxGpusPerJob": 8},
        ["spec.limits.maxGpusPerJob"],
    ),
    Case(
        "voucher-duplicate-cluster",
        "VoucherQuota",
        {"spec.allowedClusters": ["member-a", "member-b", "member-a"]},
        ["spec.allowedClusters[2]"],
    ),
    Case(
        "voucher-duplicate-model",
        "VoucherQuota",
        {"spec.allowedGPUModels": ["H100", "H100"]},
        ["spec.allowedGPUModels[1]"],
    ),
    Case("voucher-credit-float", "VoucherQuota", {"spec.creditLine": 0.5}, ["spec.creditLine"]),
    Case(
        "voucher-status-negative", "VoucherQuota", {"status": {"spent": "-1.00"}}, ["status.spent"]
    ),
    # MemberCluster
    Case("member-no-prices", "MemberCluster", {"spec.prices": []}, ["spec.prices"], ["1"]),
    Case(
        "member-duplicate-price",
        "MemberCluster",
        {"spec.prices[1].gpuModel": "A800", "status": {}},
        ["spec.prices[1].gpuModel"],
    ),
    Case(
        "member-price-zero",
        "MemberCluster",
        {"spec.prices[0].pricePerGPUHour": 0},
        ["spec.prices[0].pricePerGPUHour"],
        ["greater than 0"],
    ),
    Case(
        "member-price-missing",
        "MemberCluster",
        {"spec.prices[0].pricePerGPUHour": _DELETE},
        ["spec.prices[0].pricePerGPUHour"],
    ),
    Case(
        "member-offered-model-unpriced",
        "MemberCluster",
        {"spec.prices": [{"gpuModel": "A800", "pricePerGPUHour": 16}]},
        ["spec.prices"],
        ["L40S"],
    ),
    Case(
        "member-secret-namespace",
        "MemberCluster",
        {"spec.kubeconfigSecretRef.namespace": _DELETE},
        ["spec.kubeconfigSecretRef.namespace"],
    ),
    Case(
        "member-secret-key",
        "MemberCluster",
        {"spec.kubeconfigSecretRef.key": "kube config"},
        ["spec.kubeconfigSecretRef.key"],
    ),
    Case(
        "member-gpu-resource",
        "MemberCluster",
        {"spec.gpuResourceName": "gpu"},
        ["spec.gpuResourceName"],
    ),
    Case("member-region", "MemberCluster", {"spec.region": "Shanghai Pudong"}, ["spec.region"]),
    Case(
        "member-endpoint-scheme",
        "MemberCluster",
        {"spec.telemetryEndpoints": ["ftp://member-b/metrics"]},
        ["spec.telemetryEndpoints[0]"],
    ),
    Case(
        "member-endpoint-port",
        "MemberCluster",
        {"spec.telemetryEndpoints": ["http://member-b:99999/metrics"]},
        ["spec.telemetryEndpoints[0]"],
    ),
    Case(
        "member-endpoint-duplicate",
        "MemberCluster",
        {"spec.telemetryEndpoints": ["http://b:9400/metrics", "http://b:9400/metrics"]},
        ["spec.telemetryEndpoints[1]"],
    ),
    Case("member-name", "MemberCluster", {"metadata.name": "member.b"}, ["metadata.name"]),
    Case(
        "member-status-utilization",
        "MemberCluster",
        {"status": {"utilizationPercent": 101}},
        ["status.utilizationPercent"],
        ["100"],
    ),
    Case(
        "member-cordoned-string",
        "MemberCluster",
        {"spec.cordoned": "yes please"},
        ["spec.cordoned"],
    ),
    # Capability requests and the accelerator catalogue's per-member entries.
    Case("job-capability-empty", "ComputeJob", {"spec.capability": {}}, ["spec.capability"]),
    Case(
        "job-capability-unknown-vendor",
        "ComputeJob",
        {"spec.capability": {"vendors": ["Intel"]}},
        ["spec.capability.vendors[0]"],
        ["Huawei"],
    ),
    Case(
        "job-capability-tflops-zero",
        "ComputeJob",
        {"spec.capability": {"minFP16TFLOPS": 0}},
        ["spec.capability.minFP16TFLOPS"],
    ),
    Case(
        "job-capability-memory-too-large",
        "ComputeJob",
        {"spec.capability": {"minMemoryGiB": 5000}},
        ["spec.capability.minMemoryGiB"],
        ["4096"],
    ),
    Case(
        "job-capability-duplicate-vendor",
        "ComputeJob",
        {"spec.capability": {"vendors": ["Huawei", "Huawei"]}},
        ["spec.capability.vendors[1]"],
    ),
    Case(
        "member-accelerator-duplicate-model",
        "MemberCluster",
        {
            "spec.accelerators": [
                {"model": "MLU590", "vendor": "Cambricon", "memoryGiB": 80},
                {"model": "MLU590", "vendor": "Cambricon", "memoryGiB": 96},
            ]
        },
        ["spec.accelerators[1].model"],
    ),
    Case(
        "member-accelerator-tflops-zero",
        "MemberCluster",
        {
            "spec.accelerators": [
                {"model": "Z100", "vendor": "Hygon", "memoryGiB": 32, "fp16TFLOPS": 0}
            ]
        },
        ["spec.accelerators[0].fp16TFLOPS"],
    ),
    Case(
        "member-endpoint-fragment-not-a-node",
        "MemberCluster",
        {"spec.telemetryEndpoints": ["http://10.0.0.5:8082/metrics#other"]},
        ["spec.telemetryEndpoints[0]"],
        ["#node="],
    ),
]


@pytest.mark.parametrize("kind_name", sorted(BUILDERS))
def test_builders_are_valid(kind_name: str) -> None:
    kind = kind_named(kind_name)
    assert kind is not None
    assert kind.validate(BUILDERS[kind_name]()) == []


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_objects_name_the_right_fields(case: Case) -> None:
    kind = kind_named(case.kind)
    assert kind is not None
    errors = kind.validate(case.data())
    assert sorted(error.path for error in errors) == sorted(case.paths), format_errors(errors)
    text = format_errors(errors)
    for word in case.mentions:
        assert word in text


def test_case_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


def test_validators_take_parsed_objects() -> None:
    assert validate_computejob(ComputeJob.model_validate(job())) == []
    assert validate_voucherquota(VoucherQuota.model_validate(voucher())) == []
    assert validate_membercluster(MemberCluster.model_validate(member())) == []


def test_member_without_status_needs_no_price_for_unseen_models() -> None:
    data = changed(
        member(), {"status": _DELETE, "spec.prices": [{"gpuModel": "A800", "pricePerGPUHour": 1}]}
    )
    assert kind_named("MemberCluster").validate(data) == []  # type: ignore[union-attr]


def test_member_models_without_gpus_need_no_price() -> None:
    data = changed(
        member(),
        {
            "status.gpus[1].total": 0,
            "status.gpus[1].allocatable": 0,
            "status.gpus[1].free": 0,
            "spec.prices": [{"gpuModel": "A800", "pricePerGPUHour": 1}],
        },
    )
    assert kind_named("MemberCluster").validate(data) == []  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({**job(), "apiVersion": "suanli.io/v1"}, "apiVersion"),
        ({**job(), "kind": "Job"}, "kind"),
        ({"spec": {}}, "apiVersion"),
    ],
)
def test_validate_manifest_checks_group_version_and_kind(data: dict[str, Any], path: str) -> None:
    assert [error.path for error in validate_manifest(data)] == [path]


def test_validate_manifest_dispatches_on_kind() -> None:
    assert validate_manifest(voucher()) == []
    bad = changed(voucher(), {"spec.amount": "0"})
    assert [error.path for error in validate_manifest(bad)] == ["spec.amount"]


def test_field_error_text() -> None:
    assert (
        str(FieldError("spec.replicas", "must be at most 64"))
        == "spec.replicas: must be at most 64"
    )
    assert str(FieldError("", "not an object")) == "not an object"
    assert format_errors([FieldError("a", "x"), FieldError("b", "y")]) == "a: x\nb: y"


@pytest.mark.parametrize(
    ("parts", "path"),
    [
        (("spec", "prices", 1, "gpuModel"), "spec.prices[1].gpuModel"),
        (("spec", "limits", "nvidia.com/gpu"), "spec.limits[nvidia.com/gpu]"),
        ((0, "name"), "[0].name"),
        (("spec",), "spec"),
        ((), ""),
    ],
)
def test_join_path(parts: tuple[str | int, ...], path: str) -> None:
    assert join_path(parts) == path
