"""What a template may take beyond the GPUs it pays for, pure: extended resources by allow-list,
inline CSI drivers, storage that exists already, termination graces, envFrom device variables
and the number of objects a template names; and pricing and placement judging the template's
needs by one rule, so a job admitted is one some member would take."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from suanli.api.catalogue import member_offer
from suanli.api.computejob import ComputeJob, ComputeJobSpec
from suanli.api.membercluster import MemberCluster, validate_membercluster
from suanli.api.podpolicy import template_errors
from suanli.api.references import (
    MAX_DISTINCT_REFERENCES,
    DataKind,
    device_env_errors,
    reference_limit_errors,
    template_references,
)
from suanli.api.template_needs import (
    NOTHING_BEYOND_GPUS,
    MemberOffer,
    template_needs,
    unmet_need,
)
from suanli.api.termination import bound_graces, grace_warnings, pod_lifetime
from suanli.api.voucherquota import VoucherQuota
from suanli.dispatch.capacity import CapacityIndex
from suanli.dispatch.models import ClusterInfo, JobRequest, NodeInfo
from suanli.dispatch.policy import Rejection, decide
from suanli.vouchers.pricing import Installed, PriceOffer, eligible_offers, offers_from_members
from suanli.vouchers.refusals import Refusal, RefusalReason

SPEC = "spec.template.spec"


def template(**spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": "train:1", **spec.pop("container", {})}
    return {"spec": {"restartPolicy": "Never", "containers": [container], **spec}}


def limits(**resources: str) -> dict[str, Any]:
    return {"container": {"resources": {"limits": resources}}}


def member(name: str = "member-a", **spec: Any) -> MemberCluster:
    return MemberCluster.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "region": "shanghai",
                "kubeconfigSecretRef": {"name": "k", "namespace": "suanli-system"},
                "prices": [{"gpuModel": "H100", "pricePerGPUHour": "20.00"}],
                **spec,
            },
        }
    )


VOUCHER = VoucherQuota.model_validate(
    {
        "metadata": {"name": "v", "namespace": "team-a"},
        "spec": {"amount": 100000, "validUntil": "2027-01-01T00:00:00Z"},
    }
)


def job_spec(tmpl: dict[str, Any], **spec: Any) -> ComputeJobSpec:
    return ComputeJobSpec.model_validate(
        {"replicas": 1, "gpusPerReplica": 1, "maxRuntime": "1h", "template": tmpl, **spec}
    )


# --- extended resources and inline CSI drivers ---------------------------------------------------


def test_core_resources_need_nothing_and_extended_ones_are_named_with_their_field() -> None:
    tmpl = template(
        resources={"limits": {"example.com/fpga": "1"}},
        container={
            "resources": {
                "requests": {"cpu": "4", "memory": "8Gi", "hugepages-2Mi": "1Gi"},
                "limits": {"ephemeral-storage": "10Gi", "rdma/hca": "1"},
            }
        },
        initContainers=[
            {"name": "fetch", "image": "f:1", "resources": {"limits": {"rdma/hca": "1"}}}
        ],
    )
    needs = template_needs(tmpl)
    assert needs.resource_names == {"example.com/fpga", "rdma/hca"}
    paths = {need.name: need.path for need in needs.resources}
    assert paths["example.com/fpga"] == f"{SPEC}.resources.limits[example.com/fpga]"
    assert paths["rdma/hca"] == f"{SPEC}.containers[0].resources.limits[rdma/hca]"
    assert template_needs(template(**limits(cpu="2", memory="1Gi"))).empty


@pytest.mark.parametrize(
    ("tmpl", "offer", "says"),
    [
        (
            template(**limits(**{"rdma/hca": "1"})),
            NOTHING_BEYOND_GPUS,
            "containers[0].resources.limits[rdma/hca]: rdma/hca is not among the member's "
            "spec.allowedResources",
        ),
        (
            template(**limits(**{"example.com/gpu-slice": "1"})),
            MemberOffer(
                allowed_resources=frozenset({"example.com/gpu-slice"}),
                accelerator_resources=frozenset({"example.com/gpu-slice"}),
            ),
            "example.com/gpu-slice is one of the member's accelerator resources",
        ),
        (
            template(volumes=[{"name": "v", "csi": {"driver": "secrets-store.csi.k8s.io"}}]),
            NOTHING_BEYOND_GPUS,
            "volumes[0].csi.driver: CSI driver 'secrets-store.csi.k8s.io' is not among the "
            "member's spec.inlineVolumeDrivers",
        ),
    ],
    ids=["undeclared resource", "the member's own accelerator", "inline CSI driver"],
)
def test_a_member_that_does_not_offer_what_the_template_asks_is_told_why(
    tmpl: dict[str, Any], offer: MemberOffer, says: str
) -> None:
    problem = unmet_need(template_needs(tmpl), offer)
    assert problem is not None and says in problem


def test_a_member_that_declares_the_resource_and_the_driver_runs_the_template() -> None:
    tmpl = template(
        volumes=[{"name": "v", "csi": {"driver": "fuse.example.com"}}],
        **limits(**{"rdma/hca": "1"}),
    )
    offered = member(allowedResources=["rdma/hca"], inlineVolumeDrivers=["fuse.example.com"])
    assert unmet_need(template_needs(tmpl), member_offer(offered)) is None


def test_a_members_accelerator_resources_are_its_catalogues_and_its_gpu_resource_name() -> None:
    offer = member_offer(member(gpuResourceName="example.com/vgpu"))
    assert {"nvidia.com/gpu", "example.com/vgpu"} <= offer.accelerator_resources


@pytest.mark.parametrize(
    ("allowed", "path", "says"),
    [
        (["nvidia.com/gpu"], "spec.allowedResources[0]", "accelerator resource"),
        (["rdma/hca", "nvidia.com/mig-1g.10gb"], "spec.allowedResources[1]", "accelerator"),
        (["example.com/vgpu"], "spec.allowedResources[0]", "accelerator resource"),
        (["rdma/hca", "rdma/hca"], "spec.allowedResources[1]", "duplicate"),
    ],
)
def test_a_member_may_not_allow_accelerator_resources(
    allowed: list[str], path: str, says: str
) -> None:
    errors = validate_membercluster(
        member(allowedResources=allowed, gpuResourceName="example.com/vgpu")
    )
    assert [e.path for e in errors] == [path]
    assert says in errors[0].message


def test_a_member_may_allow_network_devices() -> None:
    assert validate_membercluster(member(allowedResources=["rdma/hca", "intel.com/sriov"])) == []


# --- storage that exists already -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("volumeName", "pv-of-another-tenant"),
        ("selector", {"matchLabels": {"team": "b"}}),
        ("dataSource", {"kind": "PersistentVolumeClaim", "name": "theirs"}),
        ("dataSourceRef", {"kind": "VolumeSnapshot", "name": "snap", "apiGroup": "x"}),
    ],
)
def test_an_ephemeral_volume_may_not_bind_or_clone_existing_storage(field: str, value: Any) -> None:
    claim = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    volume = {"name": "v", "ephemeral": {"volumeClaimTemplate": {"spec": {**claim, field: value}}}}
    errors = template_errors(template(volumes=[volume]))
    assert [e.path for e in errors] == [
        f"{SPEC}.volumes[0].ephemeral.volumeClaimTemplate.spec.{field}"
    ]
    fresh = {"name": "v", "ephemeral": {"volumeClaimTemplate": {"spec": claim}}}
    assert template_errors(template(volumes=[fresh])) == []


def test_an_inline_csi_volume_may_not_carry_a_node_publish_secret() -> None:
    volume = {
        "name": "v",
        "csi": {"driver": "fuse.example.com", "nodePublishSecretRef": {"name": "creds"}},
    }
    errors = template_errors(template(volumes=[volume]))
    assert [e.path for e in errors] == [f"{SPEC}.volumes[0].csi.nodePublishSecretRef"]


# --- termination grace ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_runtime", "asked", "bound", "grace", "deadline"),
    [
        (3600, None, 30, 30, 3570),  # Kubernetes' default, within the bound
        (3600, 30 * 86400, 30, 30, 3570),  # thirty days asked: the bound
        (3600, 5, 30, 5, 3595),  # less asked: given
        (3600, 0, 30, 0, 3600),
        (40, 300, 30, 20, 20),  # half the runtime at most
        (1, None, 30, 0, 1),
        (3600, 120, 600, 120, 3480),  # a platform with a longer bound
    ],
)
def test_a_pods_grace_is_bounded_and_its_life_fits_in_max_runtime(
    max_runtime: int, asked: int | None, bound: int, grace: int, deadline: int
) -> None:
    spec = {} if asked is None else {"terminationGracePeriodSeconds": asked}
    lifetime = pod_lifetime(max_runtime, template(**spec), bound)
    assert (lifetime.grace, lifetime.active_deadline) == (grace, deadline)
    assert lifetime.grace + lifetime.active_deadline <= max(max_runtime, 1)


def test_probe_graces_are_lowered_to_the_pods_and_each_is_warned_about() -> None:
    probe = {"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 86400}
    tmpl = template(
        terminationGracePeriodSeconds=2592000,
        container={
            "livenessProbe": probe,
            "startupProbe": {**probe, "terminationGracePeriodSeconds": 3},
        },
    )
    warnings = grace_warnings(tmpl, 30)
    assert [w.split(":")[0] for w in warnings] == [
        f"{SPEC}.terminationGracePeriodSeconds",
        f"{SPEC}.containers[0].livenessProbe.terminationGracePeriodSeconds",
    ]
    assert "2592000s is above this platform's bound of 30s" in warnings[0]
    pod = tmpl["spec"]
    bound_graces(pod, 30)
    assert pod["terminationGracePeriodSeconds"] == 30
    assert pod["containers"][0]["livenessProbe"]["terminationGracePeriodSeconds"] == 30
    assert pod["containers"][0]["startupProbe"]["terminationGracePeriodSeconds"] == 3


# --- envFrom device variables and the number of references ---------------------------------------


def env_from(prefix: str | None = None, kind: str = "secretRef") -> dict[str, Any]:
    source: dict[str, Any] = {kind: {"name": "settings"}}
    if prefix is not None:
        source["prefix"] = prefix
    return template(container={"envFrom": [source]})


@pytest.mark.parametrize(
    ("prefix", "keys", "refused"),
    [
        (None, {"NVIDIA_VISIBLE_DEVICES"}, "NVIDIA_VISIBLE_DEVICES"),
        ("NVIDIA_", {"VISIBLE_DEVICES", "HOME"}, "NVIDIA_VISIBLE_DEVICES"),
        ("ASCEND_", {"VISIBLE_DEVICES"}, "ASCEND_VISIBLE_DEVICES"),
        ("ASCEND_", {"RT_VISIBLE_DEVICES"}, None),  # narrows what the pod has; adds nothing
        ("APP_", {"NVIDIA_VISIBLE_DEVICES"}, None),  # APP_NVIDIA_VISIBLE_DEVICES selects nothing
        (None, {"HF_TOKEN"}, None),
    ],
)
def test_an_env_from_source_whose_keys_would_select_devices_is_refused(
    prefix: str | None, keys: set[str], refused: str | None
) -> None:
    references = template_references(env_from(prefix))
    (reference,) = references
    errors = device_env_errors(references, {(DataKind.SECRET, "settings"): frozenset(keys)})
    if refused is None:
        assert errors == []
        return
    assert [e.path for e in errors] == [reference.path]
    assert refused in errors[0].message


def test_a_template_names_at_most_so_many_objects_each_by_a_valid_name() -> None:
    env = [
        {"name": f"V{i}", "valueFrom": {"configMapKeyRef": {"name": f"cm-{i}", "key": "k"}}}
        for i in range(MAX_DISTINCT_REFERENCES + 1)
    ]
    errors = reference_limit_errors(template_references(template(container={"env": env})))
    assert [e.path for e in errors] == [SPEC]
    assert f"at most {MAX_DISTINCT_REFERENCES}" in errors[0].message
    bad = template(container={"envFrom": [{"secretRef": {"name": "Not_A_Name"}}]})
    (error,) = reference_limit_errors(template_references(bad))
    assert error.path == f"{SPEC}.containers[0].envFrom[0].secretRef.name"


# --- pricing: a gang that never fits, a template no member runs ----------------------------------


def test_a_gang_larger_than_any_members_nodes_is_refused_as_never_fitting() -> None:
    (offer,) = offers_from_members([member()])
    eight_per_node = Installed(((8, 4),))
    spec = job_spec(template(), replicas=2, gpusPerReplica=16)
    refusal = eligible_offers([_with(offer, eight_per_node)], spec, VOUCHER)
    assert isinstance(refusal, Refusal)
    assert refusal.reason is RefusalReason.NEVER_FITS
    assert refusal.limit == "ComputeJob:spec.gpusPerReplica"
    assert "member-a/H100 has 32 in all, at most 8 on a node" in refusal.message
    fits = job_spec(template(), replicas=4, gpusPerReplica=8)
    assert not isinstance(eligible_offers([_with(offer, eight_per_node)], fits, VOUCHER), Refusal)
    # Nodes not listed yet: priced as if it fit (the dispatcher waits for them).
    assert not isinstance(eligible_offers([offer], spec, VOUCHER), Refusal)


def test_a_template_no_member_runs_is_refused_naming_the_field_and_the_member_setting() -> None:
    offers = offers_from_members([member(), member("member-b", allowedResources=["rdma/hca"])])
    spec = job_spec(template(**limits(**{"example.com/fpga": "1"})))
    refusal = eligible_offers(offers, spec, VOUCHER)
    assert isinstance(refusal, Refusal) and refusal.limit == "ComputeJob:spec.template"
    assert "member-a: spec.template.spec.containers[0].resources.limits[example.com/fpga]" in (
        refusal.message
    )
    allowed = eligible_offers(offers, job_spec(template(**limits(**{"rdma/hca": "1"}))), VOUCHER)
    assert not isinstance(allowed, Refusal)
    assert [o.cluster for o in allowed] == ["member-b"]


def _with(offer: PriceOffer, installed: Installed) -> PriceOffer:
    return replace(offer, installed=installed)


# --- pricing and placement agree -----------------------------------------------------------------

RESOURCES = ("rdma/hca", "example.com/fpga", "intel.com/sriov", "cpu", "hugepages-2Mi")
DRIVERS = ("fuse.example.com", "secrets-store.csi.k8s.io")


@given(
    asked=st.lists(st.sampled_from(RESOURCES), max_size=3),
    drivers=st.lists(st.sampled_from(DRIVERS), max_size=2),
    allowed=st.sets(st.sampled_from([r for r in RESOURCES if "/" in r])),
    runs=st.sets(st.sampled_from(DRIVERS)),
)
def test_pricing_and_placement_judge_a_templates_needs_alike(
    asked: list[str], drivers: list[str], allowed: set[str], runs: set[str]
) -> None:
    tmpl = template(
        volumes=[{"name": f"v{i}", "csi": {"driver": d}} for i, d in enumerate(drivers)],
        **limits(**dict.fromkeys(asked, "1")),
    )
    offered = member(allowedResources=sorted(allowed), inlineVolumeDrivers=sorted(runs))
    priced = eligible_offers(offers_from_members([offered]), job_spec(tmpl), VOUCHER)

    index = CapacityIndex(clock=lambda: 0.0)
    info = ClusterInfo.from_member(offered)
    index.upsert_cluster(
        ClusterInfo(info.name, info.region, info.prices, ready=True, offer=info.offer)
    )
    index.upsert_node(info.name, NodeInfo("node-1", "H100", 8))
    job = ComputeJob.model_validate(
        {"metadata": {"name": "j", "namespace": "team-a", "uid": "u"}, "spec": job_spec(tmpl)}
    )
    decision = decide(JobRequest.from_computejob(job, key="u"), index)

    assert isinstance(priced, Refusal) == (decision.choice is None)
    if decision.choice is None:
        assert decision.rejections == {"member-a": Rejection.TEMPLATE_NOT_RUN}
        assert isinstance(priced, Refusal)
        problem = unmet_need(template_needs(tmpl), member_offer(offered))
        assert problem is not None and problem in priced.message
    else:
        assert Decimal("20.00") == priced[0].price_per_gpu_hour  # type: ignore[index]
