"""The custom resources on a real API server: install, explain, apply, refuse, print."""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.kube import Cluster, kubectl
from suanli.devenv.operator_process import OperatorProcess
from suanli.kits.waiting import TIMEOUTS, wait_for

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_crds_install_with_short_names_and_category(hub: Cluster) -> None:
    resources = kubectl(hub, "api-resources", "--api-group=suanli.io", "-o", "wide").stdout
    lines = {line.split()[0]: line for line in resources.splitlines()[1:]}
    assert "cjob" in lines["computejobs"] and "true" in lines["computejobs"]  # namespaced
    assert "vq" in lines["voucherquotas"]
    assert "mc" in lines["memberclusters"] and "false" in lines["memberclusters"]
    assert all("suanli" in line for line in lines.values())


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("computejob.spec", "replicas is the number of pods in the gang"),
        ("computejob.spec.maxRuntime", "maxRuntime is the longest the job may run"),
        ("computejob.spec.placement.policy", "policy chooses among the clusters"),
        ("voucherquota.spec.limits.maxGPUsPerJob", "maxGPUsPerJob caps replicas x gpusPerReplica"),
        ("membercluster.spec.prices", "pricePerGPUHour"),
    ],
)
def test_kubectl_explain_shows_the_field_descriptions(
    hub: Cluster, path: str, expected: str
) -> None:
    # The API server publishes a new CRD's OpenAPI schema a moment after it is Established.
    def explain() -> subprocess.CompletedProcess[str] | None:
        result = kubectl(hub, "explain", path, check=False)
        return result if result.returncode == 0 else None

    explained = wait_for(
        explain, timeout=TIMEOUTS.api_ready, what=f"kubectl explain {path} to find the resource"
    )
    assert expected in " ".join(explained.stdout.split())


@pytest.fixture
def examples_applied(hub: Cluster, operator: OperatorProcess) -> Iterator[None]:
    """Every example applied through the real webhook.

    The MemberCluster examples (and their placeholder kubeconfig Secrets) go through a
    server-side dry run: stored, they would replace the session's real members of the same
    names. A dry run still passes schema validation and the admission webhook.
    """
    members = sorted(str(path) for path in EXAMPLES.glob("1*-membercluster-*.yaml"))
    others = sorted(str(path) for path in EXAMPLES.glob("*.yaml") if str(path) not in members)
    for path in members:
        kubectl(hub, "apply", "--dry-run=server", "-f", path)
    applied = [argument for path in others for argument in ("-f", path)]
    kubectl(hub, "apply", *applied)
    try:
        yield
    finally:
        kubectl(hub, "delete", "--ignore-not-found", *applied)


def test_examples_apply_and_kubectl_prints_their_columns(
    hub: Cluster, examples_applied: None
) -> None:
    jobs = kubectl(hub, "get", "cjob", "-n", "tenant-acme").stdout
    assert jobs.split("\n")[0].split() == ["NAME", "PHASE", "GPUS", "CLUSTER", "COST", "AGE"]
    assert {"notebook-smoke-test", "llm-finetune", "batch-inference"} <= {
        line.split()[0] for line in jobs.splitlines()[1:]
    }
    vouchers = kubectl(hub, "get", "vq", "-n", "tenant-acme").stdout
    assert vouchers.split("\n")[0].split() == [
        "NAME",
        "AMOUNT",
        "SPENT",
        "RESERVED",
        "REMAINING",
        "EXPIRES",
        "AGE",
    ]
    assert "acme-2026" in vouchers
    members = kubectl(hub, "get", "mc").stdout
    header = members.split("\n")[0].split()
    assert header[:3] == ["NAME", "READY", "REGION"] and header[-1] == "AGE"
    assert {"member-a", "member-b"} <= {line.split()[0] for line in members.splitlines()[1:]}
    # One word lists them all: the suanli category.
    everything = kubectl(hub, "get", "suanli", "-A").stdout
    for name in (
        "computejob.suanli.io/llm-finetune",
        "voucherquota.suanli.io/acme-2026",
        "membercluster.suanli.io/member-a",
    ):
        assert name in everything


def _example_job() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(
        (EXAMPLES / "30-computejob-single-gpu.yaml").read_text()
    )
    document["metadata"] = {"name": "bad-job", "namespace": "default"}
    return document


def _broken(change: str) -> dict[str, Any]:
    job = copy.deepcopy(_example_job())
    if change == "negative-gpus":
        job["spec"]["gpusPerReplica"] = -2
    elif change == "unknown-top-level-field":
        job["colour"] = "blue"
    elif change == "malformed-duration":
        job["spec"]["maxRuntime"] = "ten minutes"
    elif change == "missing-template":
        del job["spec"]["template"]
    return job


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ("negative-gpus", "spec.gpusPerReplica", "should be greater than or equal to 1"),
        ("unknown-top-level-field", "colour", "unknown field"),
        ("malformed-duration", "spec.maxRuntime", "should match"),
        ("missing-template", "spec.template", "Required value"),
    ],
)
def test_invalid_manifests_are_refused_naming_the_field(
    hub: Cluster, change: str, field: str, says: str
) -> None:
    result = kubectl(hub, "apply", "-f", "-", stdin=yaml.safe_dump(_broken(change)), check=False)
    assert result.returncode != 0, f"{change} was accepted"
    assert field in result.stderr and says in result.stderr, result.stderr
    listed = kubectl(hub, "get", "cjob", "bad-job", "-n", "default", "--ignore-not-found").stdout
    assert listed == ""
