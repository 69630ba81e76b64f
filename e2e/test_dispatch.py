"""Dispatch across the federation: price, live capacity, telemetry, gangs, deletion, charging."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from kubernetes import client

from e2e import operator_metrics
from e2e.kube import Cluster
from e2e.tenant import GROUP, VERSION, Tenant, compute_job, wait_member_free_gpus
from suanli.devenv.fakenvml import FakeNvmlState, sample_gpus
from suanli.devenv.fakenvml.exporter_process import FakeGpuExporter
from suanli.devenv.manifests import GPU_RESOURCE
from suanli.devenv.operator_process import OperatorProcess
from suanli.kits.waiting import TIMEOUTS, wait_for


@pytest.fixture
def tenant(hub: Cluster, namespace: str, operator: OperatorProcess) -> Tenant:
    return Tenant(hub, namespace)


def test_a_job_goes_to_the_cheapest_member_with_its_model(
    tenant: Tenant, operator: OperatorProcess, hub: Cluster
) -> None:
    # A800 on member-b costs 22.00, H100 on member-a 28.00: the job accepts both. Jobs of
    # earlier tests may still hold the A800s (their namespaces are being deleted): wait.
    wait_member_free_gpus(hub, "member-b", "A800", 16)
    tenant.submit(compute_job("cheap", models=["H100", "A800"], run_for="1s"))
    done = tenant.wait_phase("cheap", "Succeeded", timeout=TIMEOUTS.job_complete)
    status = done["status"]
    assert status["cluster"] == "member-b"
    attempt = status["attempts"][-1]
    assert attempt["gpuModel"] == "A800" and attempt["pricePerGPUHour"] == "22.00"
    dispatched = next(c for c in status["conditions"] if c["type"] == "Dispatched")
    assert "member-b" in dispatched["message"] and "chosen" in dispatched["message"]
    assert Decimal(status["chargedCost"]) > 0
    tenant.assert_ledger_balanced()
    observed = operator_metrics.samples(operator)
    assert observed["suanli_dispatch_latency_seconds_count[]"] >= 1
    assert "suanli_queue_depth[]" in observed
    a800 = "suanli_member_gpus[('member', 'member-b'), ('model', 'A800')]"
    wait_for(  # written with the member's status, every few seconds
        lambda: operator_metrics.samples(operator).get(a800) == 16,
        timeout=TIMEOUTS.condition_stable,
        what="the operator to export member-b's A800 count",
    )


@pytest.fixture
def busy_a800_telemetry(
    hub: Cluster, operator: OperatorProcess, tmp_path: Path
) -> Iterator[list[FakeGpuExporter]]:
    """member-b's A800 nodes report every GPU busy (used outside Kubernetes) via exporters."""
    exporters = []
    for node in ("member-b-a800-0", "member-b-a800-1"):
        state = FakeNvmlState(
            gpus=tuple(
                dataclasses.replace(gpu, utilization_gpu=97, memory_used=70 * 2**30)
                for gpu in sample_gpus(8, seed=node, name="NVIDIA A800-SXM4-80GB")
            )
        )
        exporter = FakeGpuExporter(tmp_path / node, state, hostname=node)
        exporter.start()
        exporters.append(exporter)
    custom = client.CustomObjectsApi(hub.api)
    patch = {"spec": {"telemetryEndpoints": [f"{e.url}/metrics" for e in exporters]}}
    custom.patch_cluster_custom_object(GROUP, VERSION, "memberclusters", "member-b", patch)
    try:
        yield exporters
    finally:
        custom.patch_cluster_custom_object(
            GROUP, VERSION, "memberclusters", "member-b", {"spec": {"telemetryEndpoints": None}}
        )
        for exporter in exporters:
            exporter.stop()


def test_gpus_busy_outside_kubernetes_send_jobs_to_the_next_member(
    tenant: Tenant, hub: Cluster, busy_a800_telemetry: list[FakeGpuExporter]
) -> None:
    wait_member_free_gpus(hub, "member-b", "A800", 0)
    tenant.submit(compute_job("detour", models=["A800", "H100"], run_for="1s"))
    done = tenant.wait_phase("detour", "Succeeded", timeout=TIMEOUTS.job_complete)
    assert done["status"]["cluster"] == "member-a"
    # The GPUs go idle again: the cheaper member is chosen again.
    for exporter in busy_a800_telemetry:
        idle = FakeNvmlState(
            gpus=tuple(
                dataclasses.replace(gpu, utilization_gpu=0, memory_used=0)
                for gpu in exporter.state.gpus
            )
        )
        exporter.set_state(idle)
    wait_member_free_gpus(hub, "member-b", "A800", 16)
    tenant.submit(compute_job("back", models=["A800", "H100"], run_for="1s"))
    assert (
        tenant.wait_phase("back", "Succeeded", timeout=TIMEOUTS.job_complete)["status"]["cluster"]
        == "member-b"
    )


def _gpus_in_use(member: Cluster) -> int:
    pods = member.core.list_pod_for_all_namespaces(
        label_selector="app.kubernetes.io/managed-by=suanli"
    ).items
    return sum(
        int((pod.spec.containers[0].resources.limits or {}).get(GPU_RESOURCE, 0))
        for pod in pods
        if pod.spec.node_name and pod.status.phase in ("Pending", "Running")
    )


def test_a_burst_larger_than_the_federation_queues_and_never_overplaces(
    tenant: Tenant, clusters: dict[str, Cluster]
) -> None:
    member_a = clusters["member-a"]
    capacity = 32  # 4 nodes x 8 H100
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _gpus_in_use(member_a))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        # 18 jobs x 4 H100 = 72 GPUs asked of 32, plus a gang of 4 x 8 that needs all of it.
        for index in range(18):
            tenant.submit(compute_job(f"burst-{index:02d}", gpus=4, models=["H100"], run_for="3s"))
        tenant.submit(compute_job("gang", gpus=8, replicas=4, models=["H100"], run_for="2s"))
        queued = wait_for(
            lambda: [j for j in tenant.jobs() if (j.get("status") or {}).get("phase") == "Queued"],
            timeout=TIMEOUTS.job_complete,
            what="some jobs to wait in the queue",
        )
        reason = next(c for c in queued[0]["status"]["conditions"] if c["type"] == "Dispatched")
        assert reason["status"] == "False" and "H100" in reason["message"]

        def all_done() -> bool:
            phases = [(j.get("status") or {}).get("phase") for j in tenant.jobs()]
            return all(phase == "Succeeded" for phase in phases)

        wait_for(all_done, timeout=3 * TIMEOUTS.job_complete, what="every job to finish")
    finally:
        stop.set()
        sampler.join()
    assert 0 < peak <= capacity
    gang = tenant.job("gang")["status"]
    assert gang["cluster"] == "member-a"
    remote = gang["remoteRef"]
    pods = member_a.core.list_namespaced_pod(
        remote["namespace"], label_selector=f"job-name={remote['name']}"
    ).items
    assert len(pods) == 4 and all(pod.spec.node_name.startswith("member-a-") for pod in pods)
    tenant.assert_ledger_balanced()


def test_deleting_a_computejob_removes_its_remote_job_and_charges_the_time_used(
    tenant: Tenant, clusters: dict[str, Cluster]
) -> None:
    tenant.submit(compute_job("long", gpus=2, models=["L40S"], run_for="1h"))
    running = tenant.wait_phase("long", "Running", timeout=TIMEOUTS.job_complete)
    remote = running["status"]["remoteRef"]
    # The operator's own finalizer holds the job, and nothing of Kopf's bookkeeping is written
    # on it (each such write was another metadata PATCH through the webhooks): the only
    # annotation of suanli's is the hold, stored with the job at its create.
    metadata = running["metadata"]
    assert metadata["finalizers"] == ["suanli.io/finalizer"]
    ours = [key for key in metadata.get("annotations") or {} if key.startswith("suanli.io/")]
    assert ours == ["suanli.io/hold"]
    member_b = clusters["member-b"]
    assert member_b.batch.read_namespaced_job(remote["name"], remote["namespace"])
    time.sleep(2)  # let it run for a measurable while before it is stopped
    tenant.custom.delete_namespaced_custom_object(
        GROUP, VERSION, tenant.namespace, "computejobs", "long"
    )

    def remote_gone() -> bool:
        names = [
            j.metadata.name
            for j in member_b.batch.list_namespaced_job(remote["namespace"]).items
            if j.metadata.deletion_timestamp is None
        ]
        return remote["name"] not in names

    wait_for(remote_gone, timeout=TIMEOUTS.condition_stable, what="the remote Job to go")
    wait_for(lambda: not tenant.jobs(), timeout=TIMEOUTS.condition_stable, what="the job to go")
    # 2 L40S at 9.50/GPU-hour for a few seconds: charged something, and nothing stays reserved
    # (the voucher's write may trail the job's removal by a moment).
    status = wait_for(
        lambda: (found := tenant.voucher_status()) and Decimal(found["reserved"]) == 0 and found,
        timeout=TIMEOUTS.condition_stable,
        what="the hold to be released",
    )
    assert Decimal(status["spent"]) > 0
