"""Heterogeneous accelerators on real control planes: Ascend nodes beside NVIDIA ones, jobs that
ask by capability placed by price per PFLOPS-hour with live npu-exporter telemetry, and
capacity in PFLOPS on MemberCluster status, in metrics and in ``suanli capacity``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e import operator_metrics
from e2e.kube import Cluster
from e2e.tenant import GROUP, VERSION, Tenant, compute_job, member_status, wait_member_free_gpus
from suanli.api.catalogue import DEFAULT_CATALOGUE, format_pflops
from suanli.devenv.fakenpu import sample_npus
from suanli.devenv.fakenpu.process import FakeNpuExporter
from suanli.devenv.manifests import ASCEND_RESOURCE, GPU_RESOURCE, gpu_nodes
from suanli.devenv.operator_process import OperatorProcess
from suanli.devenv.topology import ASCEND910B, ClusterSpec, NodePool
from suanli.dispatch.kube import node_from_k8s
from suanli.kits.waiting import TIMEOUTS, wait_for

MEMBER = "member-b"
ASCEND_POOL = ClusterSpec(
    name=MEMBER,
    node_pools=(NodePool(name="ascend910b", count=2, gpus_per_node=8, gpu=ASCEND910B),),
)
# 8.00 / 0.320 PFLOPS = 25.00 per PFLOPS-hour: below member-a's H100 (28.00 / 0.989 = 28.31)
# and member-b's A800 (22.00 / 0.312 = 70.51). Per GPU-hour the L40S (9.50) is cheaper still,
# but with 48 GiB it does not qualify.
ASCEND_PRICE = "8.00"
CAPABLE = {"minFP16TFLOPS": 300, "minMemoryGiB": 64}


def _prices(hub: Cluster) -> list[dict[str, Any]]:
    body = client.CustomObjectsApi(hub.api).get_cluster_custom_object(
        GROUP, VERSION, "memberclusters", MEMBER
    )
    prices: list[dict[str, Any]] = body["spec"]["prices"]
    return prices


def _patch_member(hub: Cluster, spec: dict[str, Any]) -> None:
    client.CustomObjectsApi(hub.api).patch_cluster_custom_object(
        GROUP, VERSION, "memberclusters", MEMBER, {"spec": spec}
    )


@pytest.fixture(scope="module")
def ascend_member(
    hub: Cluster,
    clusters: dict[str, Cluster],
    operator: OperatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[FakeNpuExporter]]:
    """member-b gains two Ascend 910B nodes (as Ascend's device plugin labels and advertises
    them), priced, with a stand-in npu-exporter per node listed in its telemetryEndpoints."""
    member = clusters[MEMBER]
    original = _prices(hub)
    _patch_member(
        hub, {"prices": [*original, {"gpuModel": "ASCEND910B", "pricePerGPUHour": ASCEND_PRICE}]}
    )
    nodes = gpu_nodes(ASCEND_POOL)
    for node in nodes:
        member.core.create_node(node)
    workdir = tmp_path_factory.mktemp("npu")
    exporters = [
        FakeNpuExporter(
            workdir, sample_npus(8, seed=n["metadata"]["name"]), node=n["metadata"]["name"]
        )
        for n in nodes
    ]
    try:
        for exporter in exporters:
            exporter.start()
        _patch_member(hub, {"telemetryEndpoints": [e.endpoint for e in exporters]})
        wait_member_free_gpus(hub, MEMBER, "ASCEND910B", 16)
        yield exporters
    finally:
        _patch_member(hub, {"telemetryEndpoints": None})
        for exporter in exporters:
            exporter.stop()
        for node in nodes:
            try:
                member.core.delete_node(node["metadata"]["name"])
            except ApiException as error:
                if error.status != 404:
                    raise
        wait_for(
            lambda: all(g["model"] != "ASCEND910B" for g in member_status(hub, MEMBER)["gpus"]),
            timeout=TIMEOUTS.job_complete,
            what="member-b's status to drop the Ascend nodes",
        )
        _patch_member(hub, {"prices": original})


@pytest.fixture
def tenant(hub: Cluster, namespace: str, ascend_member: list[FakeNpuExporter]) -> Tenant:
    return Tenant(hub, namespace)


def _remote_pod(member: Cluster, job_uid: str) -> dict[str, Any]:
    """The job's pod on the member, once the member's scheduler bound it."""

    def bound() -> dict[str, Any] | None:
        pods = member.core.list_pod_for_all_namespaces(
            label_selector=f"suanli.io/job-uid={job_uid}"
        ).items
        pod = pods[0] if pods else None
        return member.api.sanitize_for_serialization(pod) if pod and pod.spec.node_name else None

    result: dict[str, Any] = wait_for(
        bound, timeout=TIMEOUTS.job_complete, what=f"the remote pod of {job_uid} to be bound"
    )
    return result


def _dispatched_message(job: dict[str, Any]) -> str:
    condition = next(c for c in job["status"]["conditions"] if c["type"] == "Dispatched")
    message: str = condition["message"]
    return message


def test_a_capability_job_goes_to_the_cheapest_pflops_hour_and_asks_that_vendors_resource(
    tenant: Tenant, hub: Cluster, clusters: dict[str, Cluster]
) -> None:
    tenant.submit(compute_job("npu", gpus=8, run_for="20s", capability=CAPABLE))
    job = tenant.wait_phase("npu", "Running", "Succeeded", timeout=TIMEOUTS.job_complete)
    status = job["status"]
    assert status["cluster"] == MEMBER
    assert status["attempts"][-1]["gpuModel"] == "ASCEND910B"
    message = _dispatched_message(job)
    assert "ASCEND910B free at 8.00 CNY/GPU-hour = 25.00 CNY/PFLOPS-hour at 320 TFLOPS" in message
    assert "chosen" in message and "no fresh telemetry" not in message
    assert "member-a" in message and "cheaper per PFLOPS-hour" in message
    pod = _remote_pod(clusters[MEMBER], job["metadata"]["uid"])
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {ASCEND_RESOURCE: "8"}
    assert pod["spec"]["nodeName"].startswith(f"{MEMBER}-ascend910b-")
    tenant.wait_phase("npu", "Succeeded", timeout=TIMEOUTS.job_complete)
    tenant.assert_ledger_balanced()


def test_when_telemetry_marks_the_npus_busy_the_job_goes_to_the_next(
    tenant: Tenant,
    hub: Cluster,
    clusters: dict[str, Cluster],
    ascend_member: list[FakeNpuExporter],
) -> None:
    for exporter in ascend_member:
        exporter.set_state(exporter.state.busy())
    try:
        wait_member_free_gpus(hub, MEMBER, "ASCEND910B", 0)
        wait_member_free_gpus(hub, "member-a", "H100", 32)
        tenant.submit(compute_job("detour", gpus=8, run_for="20s", capability=CAPABLE))
        job = tenant.wait_phase("detour", "Running", "Succeeded", timeout=TIMEOUTS.job_complete)
        assert job["status"]["cluster"] == "member-a"
        assert job["status"]["attempts"][-1]["gpuModel"] == "H100"
        message = _dispatched_message(job)
        assert "28.31 CNY/PFLOPS-hour at 989 TFLOPS, chosen" in message
        # member-b's best capable model is now its A800: 22.00 / 0.312 per PFLOPS-hour.
        assert "70.51 CNY/PFLOPS-hour at 312 TFLOPS, not chosen" in message
        pod = _remote_pod(clusters["member-a"], job["metadata"]["uid"])
        assert pod["spec"]["containers"][0]["resources"]["limits"] == {GPU_RESOURCE: "8"}
        tenant.wait_phase("detour", "Succeeded", timeout=TIMEOUTS.job_complete)
    finally:
        for exporter in ascend_member:
            exporter.set_state(exporter.state.idle())
        wait_member_free_gpus(hub, MEMBER, "ASCEND910B", 16)


def _expected_pflops(member: Cluster) -> Decimal:
    """The member's nodes' devices in PFLOPS, read from the Node objects themselves."""
    total = Decimal(0)
    for node in member.core.list_node().items:
        info = node_from_k8s(member.api.sanitize_for_serialization(node))
        if info.model is not None:
            total += DEFAULT_CATALOGUE.pflops(info.model, info.total) or Decimal(0)
    return total


def test_member_status_and_the_federation_summary_count_pflops(
    hub: Cluster,
    clusters: dict[str, Cluster],
    operator: OperatorProcess,
    ascend_member: list[FakeNpuExporter],
) -> None:
    members = ["member-a", MEMBER]
    expected = {name: format_pflops(_expected_pflops(clusters[name])) for name in members}
    assert expected == {"member-a": "31.648", MEMBER: "13.008"}  # 32 H100; 16 A800, 8 L40S, 16 910B

    def reported() -> dict[str, str] | None:
        statuses = {name: member_status(hub, name) for name in members}
        totals = {name: s.get("totalPFLOPS", "") for name, s in statuses.items()}
        return totals if totals == expected else None

    wait_for(reported, timeout=TIMEOUTS.condition_stable, what="members' PFLOPS in status")
    for name in members:
        status = member_status(hub, name)
        assert status["schedulablePFLOPS"] == expected[name]  # every node takes pods
        assert Decimal(status["freePFLOPS"]) <= Decimal(status["schedulablePFLOPS"])
        by_model = {g["model"]: g for g in status["gpus"]}
        if name == MEMBER:
            ascend = by_model["ASCEND910B"]
            assert (ascend["vendor"], ascend["resourceName"], ascend["fp16TFLOPS"]) == (
                "Huawei",
                ASCEND_RESOURCE,
                320,
            )

    kubeconfig = str(hub.info.kubeconfig)
    result = subprocess.run(
        [sys.executable, "-m", "suanli", "capacity", "--kubeconfig", kubeconfig, "--json"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
        timeout=60,
    )
    summary = json.loads(result.stdout)
    listed = {m["name"]: m for m in summary["members"]}
    assert summary["totalPFLOPS"] == format_pflops(
        sum((Decimal(m["totalPFLOPS"]) for m in listed.values()), Decimal(0))
    )
    assert Decimal(summary["totalPFLOPS"]) >= Decimal("44.656")  # member-a + member-b at least
    ready = [m for m in listed.values() if m["ready"]]
    assert summary["schedulablePFLOPS"] == format_pflops(
        sum((Decimal(m["schedulablePFLOPS"]) for m in ready), Decimal(0))
    )
    table = subprocess.run(
        [sys.executable, "-m", "suanli", "capacity", "--kubeconfig", kubeconfig],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "PFLOPS (FP16) schedulable now" in table and "FEDERATION" in table

    def federation_metric() -> float | None:
        value = operator_metrics.samples(operator).get(
            "suanli_federation_pflops[('state', 'total')]"
        )
        return (
            value
            if value is not None and abs(value - float(summary["totalPFLOPS"])) < 1e-6
            else None
        )

    wait_for(federation_metric, timeout=TIMEOUTS.condition_stable, what="the federation metric")
    member_metric = operator_metrics.samples(operator)[
        f"suanli_member_pflops[('member', '{MEMBER}'), ('state', 'total')]"
    ]
    assert abs(member_metric - 13.008) < 1e-6
    # kubectl's columns show it at a glance.
    crd = client.ApiextensionsV1Api(hub.api).read_custom_resource_definition(
        "memberclusters.suanli.io"
    )
    columns = [c.name for c in crd.spec.versions[0].additional_printer_columns]
    assert "FreePFLOPS" in columns and "PFLOPS" in columns
