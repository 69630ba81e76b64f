"""The remote workload built for a ComputeJob: deterministic, labelled, GPU-pinned."""

import pytest

from suanli.api.computejob import ComputeJob
from suanli.api.names import JOB_UID_LABEL
from suanli.api.podpolicy import PodSecurityLevel
from suanli.members.workload import (
    POD_SECURITY_VERSION,
    ModelPin,
    enforces_at_least,
    needs_relabel,
    remote_job,
    remote_name,
    remote_namespace,
    remote_namespace_object,
)

H100_PIN = ModelPin(product_values=frozenset({"NVIDIA-H100-80GB-HBM3"}))
PRODUCT_TERM = {
    "matchExpressions": [
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]},
        {"key": "suanli.io/gpu-model", "operator": "DoesNotExist"},
    ]
}


def _terms(body: dict) -> list[dict]:
    affinity = body["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    terms: list[dict] = affinity["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    return terms


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
    body = remote_job(make_job(), "nvidia.com/gpu", H100_PIN)
    spec = body["spec"]
    assert spec["parallelism"] == spec["completions"] == 4
    assert spec["backoffLimit"] == 0
    # maxRuntime (2h) less the default grace (30s): the pods are gone by maxRuntime.
    assert spec["activeDeadlineSeconds"] == 7200 - 30
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "8"
    assert _terms(body) == [PRODUCT_TERM]
    assert "nodeSelector" not in pod
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


def test_remote_pods_get_no_service_account_token_and_no_service_links() -> None:
    job = make_job()
    job.spec.template["spec"]["automountServiceAccountToken"] = True  # the hub refuses it too
    pod = remote_job(job, "nvidia.com/gpu", None)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False


def test_a_model_known_only_by_suanlis_label_is_pinned_by_that_label() -> None:
    pin = ModelPin().with_node("H100", "")
    assert _terms(remote_job(make_job(), "nvidia.com/gpu", pin)) == [
        {"matchExpressions": [{"key": "suanli.io/gpu-model", "operator": "In", "values": ["H100"]}]}
    ]


def test_a_pin_repeats_the_dispatchers_rule_suanlis_label_first() -> None:
    # Two product strings of one model and a node named by the admin's label: any of them,
    # but a product-labelled node only when the admin did not name it something else.
    pin = (
        ModelPin()
        .with_node("", "NVIDIA-H100-80GB-HBM3")
        .with_node("", "NVIDIA-H100-PCIe")
        .with_node("h100-sxm", "NVIDIA-A100-SXM4-80GB")
    )
    assert pin.with_node("", "NVIDIA-H100-PCIe") is pin
    assert _terms(remote_job(make_job(), "nvidia.com/gpu", pin)) == [
        {
            "matchExpressions": [
                {"key": "suanli.io/gpu-model", "operator": "In", "values": ["h100-sxm"]}
            ]
        },
        {
            "matchExpressions": [
                {
                    "key": "nvidia.com/gpu.product",
                    "operator": "In",
                    "values": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe"],
                },
                {"key": "suanli.io/gpu-model", "operator": "DoesNotExist"},
            ]
        },
    ]


def test_the_pin_is_anded_with_the_tenants_own_node_affinity() -> None:
    zone = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}
    rack = {"key": "example.com/rack", "operator": "In", "values": ["r1"]}
    job = make_job()
    job.spec.template["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [zone]}, {"matchExpressions": [rack]}]
            }
        }
    }
    terms = _terms(remote_job(job, "nvidia.com/gpu", H100_PIN))
    # Either of the tenant's terms, each only on the pinned model.
    assert terms == [
        {"matchExpressions": [zone, *PRODUCT_TERM["matchExpressions"]]},
        {"matchExpressions": [rack, *PRODUCT_TERM["matchExpressions"]]},
    ]


@pytest.mark.parametrize("level", list(PodSecurityLevel))
def test_the_remote_namespace_enforces_warns_and_audits_the_members_level(
    level: PodSecurityLevel,
) -> None:
    labels = remote_namespace_object(make_job(), level)["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == level.value
        assert labels[f"pod-security.kubernetes.io/{mode}-version"] == POD_SECURITY_VERSION
    assert labels["app.kubernetes.io/managed-by"] == "suanli"


@pytest.mark.parametrize(
    ("enforced", "wanted", "enough"),
    [
        (None, PodSecurityLevel.BASELINE, False),
        ("privileged", PodSecurityLevel.BASELINE, False),
        ("nonsense", PodSecurityLevel.BASELINE, False),
        ("baseline", PodSecurityLevel.BASELINE, True),
        ("restricted", PodSecurityLevel.BASELINE, True),
        ("baseline", PodSecurityLevel.RESTRICTED, False),
        ("restricted", PodSecurityLevel.RESTRICTED, True),
    ],
)
def test_an_existing_namespace_is_relabelled_only_when_it_enforces_less(
    enforced: str | None, wanted: PodSecurityLevel, enough: bool
) -> None:
    have = {} if enforced is None else {"pod-security.kubernetes.io/enforce": enforced}
    assert enforces_at_least(have, wanted) is enough
    labels = remote_namespace_object(make_job(), wanted)["metadata"]["labels"]
    assert needs_relabel(have, labels) is not enough
