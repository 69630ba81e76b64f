"""Dispatcher inputs: GPU product names, member Nodes and Pods, and the API models' records."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from suanli.api.computejob import ComputeJob, PlacementPolicy
from suanli.api.gpu_models import (
    MODEL_LABEL,
    PRODUCT_LABEL,
    GpuProduct,
    canonical_model,
    normalize_gpu_model,
    parse_gpu_product,
    product_of_labels,
)
from suanli.api.membercluster import MemberCluster
from suanli.api.names import JOB_UID_LABEL
from suanli.api.podpolicy import PodSecurityLevel
from suanli.api.voucherquota import VoucherQuota
from suanli.dispatch.kube import node_from_k8s, parse_count, pod_from_k8s
from suanli.dispatch.models import ClusterInfo, JobRequest, VoucherTerms, unmet_levels

# --- GPU product names --------------------------------------------------------------------------

PRODUCTS = [
    # GFD labels of data-centre GPUs
    ("NVIDIA-H100-80GB-HBM3", "H100"),
    ("NVIDIA-H100-PCIe", "H100"),
    ("NVIDIA-H100-NVL", "H100"),
    ("NVIDIA-H200", "H200"),
    ("NVIDIA-H200-141GB-HBM3e", "H200"),
    ("NVIDIA-H800-80GB-HBM3", "H800"),
    ("NVIDIA-H800-PCIe", "H800"),
    ("NVIDIA-H20", "H20"),
    ("NVIDIA-A100-SXM4-80GB", "A100"),
    ("NVIDIA-A100-PCIE-40GB", "A100"),
    ("NVIDIA-A800-SXM4-80GB", "A800"),
    ("NVIDIA-L40S", "L40S"),
    ("NVIDIA-L40", "L40"),
    ("NVIDIA-L20", "L20"),
    ("NVIDIA-L4", "L4"),
    ("NVIDIA-A10", "A10"),
    ("NVIDIA-A10G", "A10G"),
    ("NVIDIA-A30", "A30"),
    ("Tesla-T4", "T4"),
    ("Tesla-V100-SXM2-32GB", "V100"),
    ("Tesla-P100-PCIE-16GB", "P100"),
    ("NVIDIA-GH200-480GB", "GH200"),
    ("NVIDIA-B200", "B200"),
    # consumer and workstation cards
    ("NVIDIA-GeForce-RTX-4090", "4090"),
    ("NVIDIA-GeForce-RTX-4090-D", "4090D"),
    ("NVIDIA-GeForce-RTX-3090-Ti", "3090TI"),
    ("NVIDIA-RTX-A6000", "A6000"),
    ("NVIDIA-RTX-6000-Ada-Generation", "RTX6000ADA"),
    ("Quadro-RTX-8000", "RTX8000"),
    # dcgm-exporter's modelName spells the same products with spaces
    ("NVIDIA H100 80GB HBM3", "H100"),
    ("NVIDIA A800-SXM4-80GB", "A800"),
    ("NVIDIA GeForce RTX 4090", "4090"),
    ("nvidia-l40s", "L40S"),
]


@pytest.mark.parametrize(("product", "model"), PRODUCTS)
def test_product_labels_give_the_short_model_name(product: str, model: str) -> None:
    assert normalize_gpu_model(product) == model
    assert parse_gpu_product(product) == GpuProduct(model=model)


@pytest.mark.parametrize(
    "product",
    ["", "NVIDIA", "AMD-Instinct-MI300X", "Ascend910B", "NVIDIA-80GB-HBM3-SXM5", "PCIe"],
)
def test_products_without_a_model_give_none(product: str) -> None:
    assert normalize_gpu_model(product) is None


@pytest.mark.parametrize(
    ("product", "mig", "shared"),
    [
        ("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", True, False),
        ("NVIDIA-H100-80GB-HBM3-MIG-3g.40gb", True, False),
        ("NVIDIA-H100-80GB-HBM3-SHARED", False, True),
        ("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb-SHARED", True, True),
    ],
)
def test_mig_and_time_slicing_are_not_whole_gpus(product: str, mig: bool, shared: bool) -> None:
    parsed = parse_gpu_product(product)
    assert parsed is not None
    assert (parsed.mig, parsed.shared, parsed.whole_gpus) == (mig, shared, False)


def test_the_admins_model_label_wins_over_the_product() -> None:
    labels = {PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3", MODEL_LABEL: "h100-sxm"}
    assert product_of_labels(labels) == GpuProduct(model="H100-SXM")
    assert product_of_labels({PRODUCT_LABEL: "NVIDIA-L40S"}) == GpuProduct(model="L40S")
    assert product_of_labels({}) is None
    assert canonical_model(" l40s ") == "L40S"


# --- member Nodes and Pods ----------------------------------------------------------------------


def k8s_node(
    name: str = "gpu-1",
    product: str | None = "NVIDIA-H100-80GB-HBM3",
    allocatable: object = "8",
    *,
    ready: str = "True",
    unschedulable: bool = False,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    labels = {PRODUCT_LABEL: product} if product else {}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"unschedulable": unschedulable, "taints": taints or []},
        "status": {
            "capacity": {"nvidia.com/gpu": "8", "cpu": "96"},
            "allocatable": {"nvidia.com/gpu": allocatable, "cpu": "95"},
            "conditions": [{"type": "Ready", "status": ready}],
        },
    }


def test_a_gfd_labelled_node() -> None:
    node = node_from_k8s(k8s_node())
    assert (node.name, node.model, node.allocatable, node.total) == ("gpu-1", "H100", 8, 8)
    assert node.schedulable and node.whole_gpus
    assert node.product == "NVIDIA-H100-80GB-HBM3"


@pytest.mark.parametrize(
    ("changes", "schedulable"),
    [
        ({"ready": "False"}, False),
        ({"ready": "Unknown"}, False),
        ({"unschedulable": True}, False),
        (
            {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]},
            False,
        ),
        (
            {"taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]},
            False,
        ),
        # A GPU pool's own taint is for the workload's tolerations, not a reason to skip it.
        ({"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]}, True),
        (
            {
                "taints": [
                    {"key": "node.kubernetes.io/memory-pressure", "effect": "PreferNoSchedule"}
                ]
            },
            True,
        ),
    ],
)
def test_node_schedulability(changes: dict[str, Any], schedulable: bool) -> None:
    assert node_from_k8s(k8s_node(**changes)).schedulable is schedulable


def test_other_gpu_resources_and_mig_nodes() -> None:
    amd = k8s_node(product=None)
    amd["status"]["allocatable"]["amd.com/gpu"] = "4"
    amd["metadata"]["labels"][MODEL_LABEL] = "MI300X"
    node = node_from_k8s(amd, gpu_resource="amd.com/gpu")
    assert (node.model, node.allocatable, node.capacity, node.total) == ("MI300X", 4, None, 4)
    mig = node_from_k8s(k8s_node(product="NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", allocatable="56"))
    assert mig.model == "A100" and not mig.whole_gpus
    assert node_from_k8s(k8s_node(product=None)).model is None


@pytest.mark.parametrize(
    ("value", "count"),
    [("8", 8), (8, 8), ("0", 0), ("1k", 1000), ("2e1", 20), ("1500m", 1), ("x", 0), (None, 0)],
)
def test_quantities(value: object, count: int) -> None:
    assert parse_count(value) == count


def k8s_pod(
    *,
    node: str | None = "gpu-1",
    phase: str = "Running",
    containers: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
    job: str | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {
            "uid": "u-1",
            "namespace": "work",
            "name": "p",
            "labels": {JOB_UID_LABEL: job} if job else {},
        },
        "spec": {
            "nodeName": node,
            "containers": containers or [gpus(2)],
            "initContainers": init or [],
        },
        "status": {"phase": phase},
    }


def gpus(n: int, *, limits_only: bool = False, sidecar: bool = False) -> dict[str, Any]:
    section = "limits" if limits_only else "requests"
    container: dict[str, Any] = {"name": "c", "resources": {section: {"nvidia.com/gpu": str(n)}}}
    if sidecar:
        container["restartPolicy"] = "Always"
    return container


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        (k8s_pod(), 2),
        (k8s_pod(containers=[gpus(1), gpus(3, limits_only=True)]), 4),
        (k8s_pod(containers=[{"name": "cpu-only"}]), 0),
        # an init container runs alone: the pod needs the larger of it and the app containers
        (k8s_pod(containers=[gpus(1)], init=[gpus(4)]), 4),
        # a sidecar runs beside everything after it
        (k8s_pod(containers=[gpus(1)], init=[gpus(1, sidecar=True), gpus(2)]), 3),
        (k8s_pod(containers=[gpus(2)], init=[gpus(1, sidecar=True)]), 3),
    ],
)
def test_pod_gpu_requests(pod: dict[str, Any], expected: int) -> None:
    assert pod_from_k8s(pod).gpus == expected


def test_pod_binding_phase_and_job() -> None:
    bound = pod_from_k8s(k8s_pod(job="uid-123"))
    assert (bound.uid, bound.node, bound.job, bound.holds_gpus) == ("u-1", "gpu-1", "uid-123", True)
    assert not pod_from_k8s(k8s_pod(node=None, phase="Pending")).holds_gpus
    assert not pod_from_k8s(k8s_pod(phase="Succeeded")).holds_gpus
    assert not pod_from_k8s(k8s_pod(phase="Failed")).holds_gpus
    assert pod_from_k8s(k8s_pod(phase="Unknown")).holds_gpus


# --- API models ---------------------------------------------------------------------------------

NOW = "2025-06-01T00:00:00Z"


def member(conditions: list[dict[str, str]], **spec: Any) -> MemberCluster:
    return MemberCluster.model_validate(
        {
            "metadata": {"name": "member-a"},
            "spec": {
                "kubeconfigSecretRef": {"name": "k", "namespace": "suanli-system"},
                "region": "shanghai-pudong",
                "prices": [
                    {"gpuModel": "H100", "pricePerGPUHour": "28.00"},
                    {"gpuModel": "l40s", "pricePerGPUHour": 9},
                ],
                **spec,
            },
            "status": {
                "conditions": [
                    {"lastTransitionTime": NOW, "message": "", **condition}
                    for condition in conditions
                ]
            },
        }
    )


def condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def test_cluster_info_from_a_ready_member() -> None:
    info = ClusterInfo.from_member(member([condition("Ready", "True", "MemberReady")]))
    assert info.name == "member-a" and info.region == "shanghai-pudong"
    assert info.prices == {"H100": Decimal("28.00"), "L40S": Decimal(9)}
    assert info.ready and not info.cordoned and info.currency == "CNY"
    assert info.gpu_resource == "nvidia.com/gpu"


@pytest.mark.parametrize(
    ("conditions", "ready", "message"),
    [
        ([], False, "not probed yet"),
        (
            [
                condition("Ready", "False", "Unreachable", "API server did not answer for 2m"),
                condition("Reachable", "False", "APIServerUnreachable"),
            ],
            False,
            "API server did not answer for 2m",
        ),
        # stale telemetry: the dispatcher falls back to Kubernetes' view itself
        (
            [
                condition("Ready", "False", "TelemetryStale"),
                condition("Reachable", "True", "APIServerReachable"),
            ],
            True,
            "",
        ),
        ([condition("Ready", "False", "TelemetryStale")], False, "TelemetryStale"),
    ],
)
def test_cluster_readiness(conditions: list[dict[str, str]], ready: bool, message: str) -> None:
    info = ClusterInfo.from_member(member(conditions))
    assert (info.ready, info.not_ready_message) == (ready, message)


def test_job_request_from_a_computejob_and_its_voucher() -> None:
    job = ComputeJob.model_validate(
        {
            "metadata": {
                "name": "train",
                "namespace": "team-a",
                "uid": "0c1d",
                "creationTimestamp": "2025-06-01T00:00:10Z",
            },
            "spec": {
                "replicas": 2,
                "gpusPerReplica": 4,
                "gpuModels": ["h100", "A800"],
                "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
                "maxRuntime": "1h",
                "priority": 5,
                "placement": {"regions": ["shanghai"], "policy": "MostHeadroom"},
            },
        }
    )
    voucher = VoucherQuota.model_validate(
        {
            "metadata": {"name": "v", "namespace": "team-a"},
            "spec": {
                "amount": 1000,
                "validUntil": "2026-01-01T00:00:00Z",
                "allowedClusters": ["member-a"],
                "allowedGPUModels": ["H100"],
            },
        }
    )
    request = JobRequest.from_computejob(job, voucher)
    assert request.key == "0c1d" and request.name == "team-a/train" and request.tenant == "team-a"
    assert (request.replicas, request.gpus_per_replica, request.total_gpus) == (2, 4, 8)
    assert request.gpu_models == {"H100", "A800"}
    assert request.regions == {"shanghai"} and request.clusters == frozenset()
    assert request.policy == PlacementPolicy.MOST_HEADROOM and request.priority == 5
    assert request.submitted_at == 1748736010.0
    assert request.voucher == VoucherTerms(
        name="v", allowed_clusters=frozenset({"member-a"}), allowed_models=frozenset({"H100"})
    )


HARDENED_POD = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [
        {
            "name": "main",
            "image": "x",
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
        }
    ],
}


def test_a_plain_template_meets_baseline_only() -> None:
    unmet = unmet_levels({"spec": {"containers": [{"name": "main", "image": "x"}]}})
    assert [level for level, _ in unmet] == [PodSecurityLevel.RESTRICTED]
    assert unmet[0][1].startswith("spec.template.spec.")


def test_a_hardened_template_meets_every_level() -> None:
    assert unmet_levels({"spec": HARDENED_POD}) == ()


def test_a_template_the_hub_refuses_meets_no_level_even_if_pss_would_pass_it() -> None:
    # nodeName is no Pod Security field, but the hub never lets a tenant pick the node: a job
    # stored before the policy existed must not be placed, not even on a restricted member.
    unmet = unmet_levels({"spec": {**HARDENED_POD, "nodeName": "gpu-0"}})
    assert [level for level, _ in unmet] == list(PodSecurityLevel)
    assert all(why.startswith("spec.template.spec.nodeName") for _, why in unmet)
