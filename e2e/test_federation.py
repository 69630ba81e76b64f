"""The local federation acts like real GPU clusters: capacity, scheduling, lifecycle, webhooks."""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.admission_faults import WebhookServer, rule
from e2e.kube import Cluster, gpu_job
from suanli.devenv import federation
from suanli.devenv.manifests import GPU_RESOURCE
from suanli.devenv.providers import is_alive
from suanli.devenv.toolchain import Toolchain
from suanli.devenv.topology import L40S, ClusterSpec, FederationSpec, NodePool, default_federation
from suanli.kits.waiting import TIMEOUTS, wait_for


def job_pods(cluster: Cluster, namespace: str, job: str) -> list[Any]:
    return cluster.core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items


def test_members_report_configured_gpu_capacity(clusters: dict[str, Cluster]) -> None:
    expected = {member.name: member for member in default_federation(2).members}
    for name, spec in expected.items():
        nodes = clusters[name].core.list_node(label_selector="nvidia.com/gpu.present=true").items
        by_name = {node.metadata.name: node for node in nodes}
        want = {
            f"{spec.name}-{pool.name}-{i}": pool
            for pool in spec.node_pools
            for i in range(pool.count)
        }
        assert set(by_name) == set(want), f"{name}: nodes differ"
        for node_name, pool in want.items():
            node = by_name[node_name]
            assert node.status.allocatable[GPU_RESOURCE] == str(pool.gpus_per_node)
            assert node.status.capacity[GPU_RESOURCE] == str(pool.gpus_per_node)
            assert node.metadata.labels["nvidia.com/gpu.product"] == pool.gpu.product
            assert node.metadata.labels["nvidia.com/gpu.count"] == str(pool.gpus_per_node)
            assert node.metadata.labels["nvidia.com/gpu.memory"] == str(pool.gpu.memory_mib)
            ready = {c.type: c.status for c in node.status.conditions}
            assert ready.get("Ready") == "True", f"{node_name} not Ready"
    # The hub has control-plane duties only: no GPU nodes.
    assert clusters["hub"].core.list_node(label_selector="nvidia.com/gpu.present=true").items == []


def test_gpu_job_is_bound_to_a_gpu_node_runs_its_duration_and_completes(
    clusters: dict[str, Cluster], namespace: str
) -> None:
    member = clusters["member-a"]
    member.batch.create_namespaced_job(namespace, gpu_job("train", gpus=2, run_duration="4s"))

    def running_pod() -> Any:
        pods = job_pods(member, namespace, "train")
        return pods[0] if pods and pods[0].status.phase == "Running" else None

    pod = wait_for(running_pod, timeout=TIMEOUTS.pod_scheduled, what="the job's pod to run")
    node = member.core.read_node(pod.spec.node_name)
    assert int(node.status.allocatable[GPU_RESOURCE]) >= 2
    scheduled = {c.type: c for c in pod.status.conditions}
    assert scheduled["PodScheduled"].status == "True"

    def complete() -> Any:
        job = member.batch.read_namespaced_job_status("train", namespace)
        conditions = {c.type: c for c in job.status.conditions or []}
        if "Failed" in conditions and conditions["Failed"].status == "True":
            pytest.fail(f"job failed: {conditions['Failed'].message}")
        done = conditions.get("Complete")
        return job if done is not None and done.status == "True" else None

    job = wait_for(complete, timeout=TIMEOUTS.job_complete, what="the job to complete")
    assert job.status.succeeded == 1
    pod = member.core.read_namespaced_pod(pod.metadata.name, namespace)
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    ran_for = terminated.finished_at - pod.status.start_time
    # The annotated duration, not "at once" (timestamps have one-second resolution).
    assert ran_for >= datetime.timedelta(seconds=3), ran_for


def test_job_asking_more_gpus_than_any_node_has_stays_unschedulable(
    clusters: dict[str, Cluster], namespace: str
) -> None:
    member = clusters["member-a"]
    member.batch.create_namespaced_job(namespace, gpu_job("too-big", gpus=9, run_duration="1s"))

    def unschedulable() -> Any:
        pods = job_pods(member, namespace, "too-big")
        if not pods:
            return None
        conditions = {c.type: c for c in pods[0].status.conditions or []}
        scheduled = conditions.get("PodScheduled")
        if scheduled is not None and scheduled.status == "False":
            return pods[0], scheduled
        return None

    pod, scheduled = wait_for(
        unschedulable, timeout=TIMEOUTS.pod_scheduled, what="the scheduler to reject the pod"
    )
    assert scheduled.reason == "Unschedulable"
    assert f"Insufficient {GPU_RESOURCE}" in scheduled.message
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None


def _deny_denied_names(request: dict[str, Any]) -> dict[str, Any]:
    """Denies ConfigMaps whose name starts with "denied-"; allows everything else."""
    return {
        "allowed": not request["name"].startswith("denied-"),
        "status": {"code": 403, "message": "denied by the e2e webhook"},
    }


@pytest.fixture
def denying_webhook(tmp_path: Path) -> Iterator[WebhookServer]:
    with WebhookServer(tmp_path, _deny_denied_names) as server:
        yield server


def test_hub_calls_validating_admission_webhooks(
    clusters: dict[str, Cluster], namespace: str, denying_webhook: WebhookServer
) -> None:
    hub = clusters["hub"]
    admission = client.AdmissionregistrationV1Api(hub.api)
    name = f"e2e-deny-{namespace}"
    admission.create_validating_webhook_configuration(
        denying_webhook.configuration(
            name,
            [rule("", "configmaps", "CREATE")],
            namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        )
    )
    try:
        # The configuration takes effect once the API server's informer has seen it.
        def denied() -> str | None:
            try:
                hub.core.create_namespaced_config_map(
                    namespace, {"metadata": {"name": "denied-probe"}}
                )
            except ApiException as error:
                return str(error.body) if error.status == 403 else None
            hub.core.delete_namespaced_config_map("denied-probe", namespace)
            return None

        message = wait_for(denied, timeout=TIMEOUTS.condition_stable, what="the webhook to deny")
        assert "denied by the e2e webhook" in message
        hub.core.create_namespaced_config_map(namespace, {"metadata": {"name": "allowed"}})
    finally:
        admission.delete_validating_webhook_configuration(name)


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _listeners(port: int) -> list[str]:
    """Command lines of the processes listening on ``port`` (from /proc: Linux only)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            listening = fields[3] == "0A"
            if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    owners = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) in inodes for fd in fd_dir.iterdir()):
                owners.append((fd_dir.parent / "cmdline").read_text().replace("\0", " "))
        except OSError:
            continue
    return owners


def test_down_leaves_no_process_and_no_port(toolchain: Toolchain) -> None:
    name = f"e2e-down-{os.getpid()}"
    small = FederationSpec(
        members=(
            ClusterSpec(
                name="solo", node_pools=(NodePool(name="l40s", count=1, gpus_per_node=4, gpu=L40S),)
            ),
        )
    )
    state = federation.up(small, toolchain, name=name, log=print)
    try:
        provider_pids = {
            c.provider_name: federation.cluster_pids(state, c, toolchain) for c in state.clusters
        }
        ports = [federation.api_port(c.kubeconfig) for c in state.clusters]
        assert all(provider_pids.values()), provider_pids
        assert all(_port_open(port) for port in ports)
        # The check below can see our own processes holding a port.
        assert all(any(state.directory in o for o in _listeners(port)) for port in ports)
    finally:
        federation.down(name, toolchain, log=print)
    leftover = [pid for pids in provider_pids.values() for pid in pids if is_alive(pid)]
    assert leftover == []
    # A port may be taken again by an unrelated process at once; none of ours may hold one.
    for port in ports:
        assert not any(state.directory in owner for owner in _listeners(port)), port
    assert federation.load_state(name) is None
