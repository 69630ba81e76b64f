"""Heterogeneous accelerators: the catalogue, detection per vendor, capability matching,
PFLOPS capacity and Ascend's npu-exporter format."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from suanli.api.accelerators import Vendor
from suanli.api.catalogue import (
    ASCEND_CHIP_LABEL,
    BUILT_IN,
    DEFAULT_CATALOGUE,
    format_pflops,
    member_catalogue,
)
from suanli.api.computejob import ComputeJobSpec
from suanli.api.membercluster import MemberCluster
from suanli.api.voucherquota import VoucherQuota
from suanli.devenv.fakenpu import render, sample_npus
from suanli.dispatch.capacity import CapacityIndex
from suanli.dispatch.kube import node_from_k8s, pod_from_k8s
from suanli.dispatch.models import CapabilityRequest, ClusterInfo, JobRequest, NodeInfo
from suanli.dispatch.pflops import federation_summary, pflops_of
from suanli.dispatch.policy import Rejection, decide
from suanli.members.workload import ModelPin
from suanli.telemetry.parse import HealthIssue, TelemetryError, parse_metrics
from suanli.telemetry.scrape import TelemetryEndpoint
from suanli.vouchers.pricing import offers_from_members, price_worst_case
from suanli.vouchers.refusals import Refusal

DATA = Path(__file__).parent / "data"
T0 = 1_764_273_000.0

# --- the catalogue ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "vendor", "resource", "tflops", "memory"),
    [
        ("H100", Vendor.NVIDIA, "nvidia.com/gpu", 989, 80),
        ("H800", Vendor.NVIDIA, "nvidia.com/gpu", 989, 80),
        ("H20", Vendor.NVIDIA, "nvidia.com/gpu", 148, 96),
        ("A100", Vendor.NVIDIA, "nvidia.com/gpu", 312, 80),
        ("A800", Vendor.NVIDIA, "nvidia.com/gpu", 312, 80),
        ("L40S", Vendor.NVIDIA, "nvidia.com/gpu", 362, 48),
        ("4090", Vendor.NVIDIA, "nvidia.com/gpu", 165, 24),
        ("ASCEND910B", Vendor.HUAWEI, "huawei.com/Ascend910", 320, 64),
        ("ASCEND910", Vendor.HUAWEI, "huawei.com/Ascend910", 256, 32),
        ("MLU370-X8", Vendor.CAMBRICON, "cambricon.com/mlu", 96, 48),
        ("Z100", Vendor.HYGON, "hygon.com/dcu", None, 32),
    ],
)
def test_catalogue_figures(
    model: str, vendor: Vendor, resource: str, tflops: int | None, memory: int
) -> None:
    entry = DEFAULT_CATALOGUE.get(model)
    assert entry is not None
    assert (entry.vendor, entry.resource, entry.fp16_tflops, entry.memory_gib) == (
        vendor,
        resource,
        tflops,
        memory,
    )


def test_every_built_in_figure_cites_a_source_and_names_are_unique() -> None:
    assert all(len(entry.source) > 20 for entry in BUILT_IN)
    assert len({entry.model for entry in BUILT_IN}) == len(BUILT_IN)
    assert DEFAULT_CATALOGUE.pflops("H100", 32) == Decimal("31.648")
    # No figure, no PFLOPS: counted as devices only.
    assert DEFAULT_CATALOGUE.pflops("Z100", 8) is None


def member(name: str = "m1", **spec: Any) -> MemberCluster:
    return MemberCluster.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "kubeconfigSecretRef": {"name": "k", "namespace": "suanli-system"},
                "region": "shanghai",
                "prices": [{"gpuModel": "H100", "pricePerGPUHour": "28.00"}],
                **spec,
            },
        }
    )


def test_a_member_extends_and_corrects_the_catalogue_for_itself_only() -> None:
    extended = member(
        accelerators=[
            {"model": "Z100", "vendor": "Hygon", "memoryGiB": 32, "fp16TFLOPS": 90},
            {"model": "MLU590", "vendor": "Cambricon", "memoryGiB": 80, "fp16TFLOPS": 314},
        ]
    )
    catalogue = member_catalogue(extended)
    z100, mlu590 = catalogue.get("Z100"), catalogue.get("mlu590")
    assert z100 is not None and z100.fp16_tflops == 90 and z100.resource == "hygon.com/dcu"
    assert mlu590 is not None and mlu590.resource == "cambricon.com/mlu"
    assert "m1" in mlu590.source
    assert DEFAULT_CATALOGUE.get("MLU590") is None
    assert member_catalogue(member()) is DEFAULT_CATALOGUE


# --- detection per vendor -----------------------------------------------------------------------


def node(name: str, labels: dict[str, str], resources: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


@pytest.mark.parametrize(
    ("labels", "resources", "model", "resource", "by"),
    [
        (
            {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            {"nvidia.com/gpu": "8"},
            "H100",
            "nvidia.com/gpu",
            "nvidia.com/gpu.product",
        ),
        (
            {"accelerator": "huawei-Ascend910", ASCEND_CHIP_LABEL: "910B3"},
            {"huawei.com/Ascend910": "8"},
            "ASCEND910B",
            "huawei.com/Ascend910",
            ASCEND_CHIP_LABEL,
        ),
        (
            {"accelerator": "huawei-Ascend910", ASCEND_CHIP_LABEL: "910ProB"},
            {"huawei.com/Ascend910": "8"},
            "ASCEND910",
            "huawei.com/Ascend910",
            ASCEND_CHIP_LABEL,
        ),
        (
            {"suanli.io/gpu-model": "MLU370-X8"},
            {"cambricon.com/mlu": "8"},
            "MLU370-X8",
            "cambricon.com/mlu",
            "suanli.io/gpu-model",
        ),
        (
            {"suanli.io/gpu-model": "Z100"},
            {"hygon.com/dcu": "8"},
            "Z100",
            "hygon.com/dcu",
            "suanli.io/gpu-model",
        ),
    ],
)
def test_each_vendors_nodes_are_detected_with_their_resource(
    labels: dict[str, str], resources: dict[str, str], model: str, resource: str, by: str
) -> None:
    info = node_from_k8s(node("n1", labels, {"cpu": "96", **resources}))
    assert (info.model, info.resource, info.allocatable, info.total) == (model, resource, 8, 8)
    assert info.model_by is not None and info.model_by[0] == by


def test_a_member_with_several_vendors_counts_each_nodes_devices_and_pods() -> None:
    ascend = node_from_k8s(node("a0", {ASCEND_CHIP_LABEL: "910B4"}, {"huawei.com/Ascend910": "8"}))
    gpu = node_from_k8s(
        node("g0", {"nvidia.com/gpu.product": "NVIDIA-A800-SXM4-80GB"}, {"nvidia.com/gpu": "8"})
    )
    index = CapacityIndex(clock=lambda: T0)
    index.upsert_cluster(ClusterInfo("m1", "sh", {}))
    index.upsert_node("m1", ascend)
    index.upsert_node("m1", gpu)
    resources = DEFAULT_CATALOGUE.resources
    pod = {
        "metadata": {"uid": "p1"},
        "spec": {
            "nodeName": "a0",
            "containers": [{"resources": {"limits": {"huawei.com/Ascend910": "2"}}}],
        },
        "status": {"phase": "Running"},
    }
    index.upsert_pod("m1", pod_from_k8s(pod, gpu_resources=resources))
    by_model = {view.model: (view.total, view.free) for view in index.inventory("m1")}
    assert by_model == {"A800": (8, 8), "ASCEND910B": (8, 6)}


def test_the_pin_selects_the_vendor_label_and_carries_the_resource() -> None:
    pin = (
        ModelPin()
        .with_node("", "", (ASCEND_CHIP_LABEL, "910B3"), "huawei.com/Ascend910")
        .with_node("", "", (ASCEND_CHIP_LABEL, "910B4"), "huawei.com/Ascend910")
    )
    assert pin.resource == "huawei.com/Ascend910"
    assert pin.node_selector_terms() == [
        {
            "matchExpressions": [
                {"key": ASCEND_CHIP_LABEL, "operator": "In", "values": ["910B3", "910B4"]},
                {"key": "suanli.io/gpu-model", "operator": "DoesNotExist"},
            ]
        }
    ]


# --- capability matching and price per PFLOPS-hour ----------------------------------------------


def federation(*members: tuple[str, str, str, int]) -> CapacityIndex:
    """(member, model, price per device-hour, free devices) each on one node of 8."""
    index = CapacityIndex(clock=lambda: T0)
    for name, model, price, free in members:
        index.upsert_cluster(ClusterInfo(name, "sh", {model: Decimal(price)}))
        index.upsert_node(name, NodeInfo(f"{name}-0", model, 8))
        if free < 8:
            from suanli.dispatch.models import PodInfo  # noqa: PLC0415

            index.upsert_pod(name, PodInfo(f"{name}-used", f"{name}-0", 8 - free))
    return index


MIXED = (
    ("ascend", "ASCEND910B", "8.00", 8),  # 8.00 / 0.320 = 25.00 per PFLOPS-hour
    ("hopper", "H100", "28.00", 8),  # 28.00 / 0.989 = 28.31
    ("ampere", "A800", "22.00", 8),  # 22.00 / 0.312 = 70.51
    ("lovelace", "L40S", "6.00", 8),  # cheapest per GPU-hour, but 48 GiB
)


def capability_job(**kwargs: Any) -> JobRequest:
    return JobRequest(
        key="j1",
        name="team-a/j1",
        tenant="team-a",
        gpus_per_replica=4,
        capability=CapabilityRequest(**kwargs),
    )


def test_cheapest_per_pflops_hour_among_qualifying_models_of_different_vendors() -> None:
    decision = decide(capability_job(min_fp16_tflops=300, min_memory_gib=64), federation(*MIXED))
    assert decision.choice is not None
    assert (decision.choice.cluster, decision.choice.model) == ("ascend", "ASCEND910B")
    assert decision.choice.price_per_pflops_hour == Decimal("25.00")
    assert "25.00 CNY/PFLOPS-hour at 320 TFLOPS, chosen" in decision.summary
    assert "hopper" in decision.summary and "cheaper per PFLOPS-hour" in decision.summary
    assert decision.rejections["lovelace"] == Rejection.NO_CAPABLE_MODEL
    lovelace = next(r for r in decision.reasons if r.cluster == "lovelace")
    assert (
        ">= 64 GiB" in lovelace.message and "L40S: NVIDIA, 362 TFLOPS, 48 GiB" in lovelace.message
    )


def test_when_the_best_is_busy_the_next_per_pflops_hour_wins() -> None:
    busy = (("ascend", "ASCEND910B", "8.00", 0), *MIXED[1:])
    decision = decide(capability_job(min_fp16_tflops=300, min_memory_gib=64), federation(*busy))
    assert decision.choice is not None and decision.choice.cluster == "hopper"


def test_a_dearer_device_per_hour_wins_when_it_delivers_more_per_yuan() -> None:
    # Per GPU-hour the A800 is cheaper; per PFLOPS-hour the H100 is.
    decision = decide(capability_job(min_memory_gib=80), federation(*MIXED[1:3]))
    assert decision.choice is not None and decision.choice.model == "H100"


def test_vendors_narrow_the_candidates() -> None:
    decision = decide(
        capability_job(min_fp16_tflops=300, vendors=frozenset({"NVIDIA"})), federation(*MIXED)
    )
    # Without the memory floor the L40S qualifies: 6.00 / 0.362 = 16.57 per PFLOPS-hour.
    assert decision.choice is not None and decision.choice.cluster == "lovelace"
    assert decision.choice.price_per_pflops_hour == Decimal("16.57")
    assert decision.rejections["ascend"] == Rejection.NO_CAPABLE_MODEL


def test_no_device_capable_enough_anywhere() -> None:
    decision = decide(capability_job(min_fp16_tflops=2000), federation(*MIXED))
    assert decision.choice is None
    assert set(decision.rejections.values()) == {Rejection.NO_CAPABLE_MODEL}
    assert "no device with >= 2000 FP16 TFLOPS" in decision.summary


def test_a_model_without_a_figure_never_qualifies() -> None:
    decision = decide(capability_job(min_fp16_tflops=1), federation(("hygon", "Z100", "1.00", 8)))
    assert decision.choice is None
    assert "Z100: Hygon, no known TFLOPS, 32 GiB" in decision.summary


def test_jobs_without_capability_still_rank_per_gpu_hour() -> None:
    job = JobRequest(key="j2", name="team-a/j2", tenant="team-a", gpus_per_replica=4)
    decision = decide(job, federation(*MIXED))
    assert decision.choice is not None and decision.choice.model == "L40S"
    assert "PFLOPS" not in decision.summary


# --- admission prices a capability job only where it may run ------------------------------------


def test_the_worst_case_counts_only_qualifying_offers() -> None:
    members = [
        member("a", prices=[{"gpuModel": "H100", "pricePerGPUHour": "28.00"}]),
        member("b", prices=[{"gpuModel": "L40S", "pricePerGPUHour": "90.00"}]),
    ]
    voucher = VoucherQuota.model_validate(
        {
            "metadata": {"name": "v", "namespace": "team-a"},
            "spec": {"amount": 100000, "validUntil": "2099-01-01T00:00:00Z"},
        }
    )
    spec = ComputeJobSpec.model_validate(
        {
            "maxRuntime": "1h",
            "capability": {"minMemoryGiB": 64},
            "template": {"spec": {"containers": [{"name": "main", "image": "train:1"}]}},
        }
    )
    worst = price_worst_case(offers_from_members(members), spec, voucher)
    assert not isinstance(worst, Refusal)
    assert worst.offer.gpu_model == "H100" and worst.amount == Decimal("28.00")
    too_much = spec.model_copy(
        update={"capability": spec.capability.model_copy(update={"min_memory_gib": 4000})}
    )  # type: ignore[union-attr]
    refused = price_worst_case(offers_from_members(members), too_much, voucher)
    assert isinstance(refused, Refusal)
    assert refused.limit == "ComputeJob:spec.capability"
    assert "L40S (NVIDIA, 362 TFLOPS, 48 GiB)" in refused.message


# --- capacity in PFLOPS -------------------------------------------------------------------------


def test_member_and_federation_pflops() -> None:
    index = federation(("m1", "H100", "28.00", 5), ("m1b", "Z100", "1.00", 8))
    sums = pflops_of(DEFAULT_CATALOGUE, index.inventory("m1"))
    assert {k: format_pflops(v) for k, v in sums.items()} == {
        "total": "7.912",
        "schedulable": "7.912",
        "free": "4.945",
    }
    assert pflops_of(DEFAULT_CATALOGUE, index.inventory("m1b"))["total"] == 0

    def status(name: str, ready: str, total: str, free: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "status": {
                "conditions": [{"type": "Ready", "status": ready}],
                "totalPFLOPS": total,
                "schedulablePFLOPS": total,
                "freePFLOPS": free,
            },
        }

    summary = federation_summary(
        [status("b", "True", "7.912", "4.945"), status("a", "False", "2.560", "2.560")]
    )
    assert [m.name for m in summary.members] == ["a", "b"]
    assert (summary.total, summary.schedulable, summary.free) == (
        Decimal("10.472"),
        Decimal("7.912"),
        Decimal("4.945"),
    )


# --- Ascend's npu-exporter ----------------------------------------------------------------------


def test_parses_an_npu_exporter_sample_into_the_per_device_view() -> None:
    snapshot = parse_metrics(
        (DATA / "npu-exporter.txt").read_text(), read_at=T0, default_node="ascend-0"
    )
    (only,) = snapshot.nodes
    assert only.name == "ascend-0"
    idle, busy = only.gpus
    assert (idle.index, idle.model, idle.utilization_percent, idle.fb_used_mib) == (
        0,
        "Ascend910B3",
        0,
        3,
    )
    assert idle.fb_free_mib == 65533
    assert idle.health_issues == {HealthIssue.DEVICE_UNHEALTHY}
    assert busy.uuid.endswith("00000002") and busy.utilization_percent == 87
    assert busy.healthy and busy.pods[0].name == "job-0"
    assert DEFAULT_CATALOGUE.model_of_name(busy.model) == "ASCEND910B"


def test_npu_series_need_the_node_from_the_endpoint() -> None:
    with pytest.raises(TelemetryError, match="#node="):
        parse_metrics((DATA / "npu-exporter.txt").read_text(), read_at=T0)
    endpoint = TelemetryEndpoint("http://10.0.0.5:8082/metrics#node=ascend-0")
    assert endpoint._default_node == "ascend-0"


def test_the_stand_in_exporter_speaks_the_same_format() -> None:
    state = sample_npus(8, seed="ascend-0").busy()
    snapshot = parse_metrics(render(state, now=T0), read_at=T0, default_node="ascend-0")
    gpus = snapshot.nodes[0].gpus
    assert len(gpus) == 8 and len({gpu.uuid for gpu in gpus}) == 8
    assert all(gpu.utilization_percent == 95 and gpu.healthy for gpu in gpus)
    index = CapacityIndex(clock=lambda: T0)
    index.upsert_cluster(ClusterInfo("m1", "sh", {}))
    index.upsert_node("m1", NodeInfo("ascend-0", "ASCEND910B", 8))
    index.update_telemetry("m1", snapshot)
    (view,) = index.inventory("m1")
    assert (view.busy, view.free, view.telemetry_fresh) == (8, 0, True)
