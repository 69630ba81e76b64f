"""Smoke test on kind: a GPU Job in a kind member binds to a kwok GPU node, and the exporter
DaemonSet serves the stand-in GPUs from the member's real node."""

from __future__ import annotations

from kubernetes import client
from kubernetes.client import V1Pod
from kubernetes.client.exceptions import ApiException

from e2e.kube import Cluster, gpu_job
from suanli.devenv import kind_install
from suanli.devenv.manifests import GPU_RESOURCE
from suanli.devenv.operator_image import FAKE_GPUS
from suanli.devenv.providers import NODE_LABEL
from suanli.kits.waiting import TIMEOUTS, wait_for


def test_a_gpu_job_binds_to_a_kwok_gpu_node_in_a_kind_member(
    kind_clusters: dict[str, Cluster], kind_namespace: str
) -> None:
    member = kind_clusters["member-a"]
    member.batch.create_namespaced_job(kind_namespace, gpu_job("smoke", 1, "2s"))

    def succeeded() -> bool:
        job = member.batch.read_namespaced_job("smoke", kind_namespace)
        return bool(job.status.succeeded)

    wait_for(succeeded, timeout=TIMEOUTS.job_complete, what="the GPU Job to succeed")
    pods = member.core.list_namespaced_pod(kind_namespace, label_selector="job-name=smoke").items
    assert len(pods) == 1
    node = member.core.read_node(pods[0].spec.node_name)
    # A kwok node with GPUs, not the kind node (which has none and runs the real pods).
    assert node.metadata.annotations.get("kwok.x-k8s.io/node") == "fake"
    assert int(node.status.allocatable[GPU_RESOURCE]) >= 1
    assert NODE_LABEL not in (node.metadata.labels or {})


def test_the_exporter_serves_the_stand_in_gpus_from_each_members_kind_node(
    kind_clusters: dict[str, Cluster], suanli_installed: kind_install.Images
) -> None:
    for name in ("member-a", "member-b"):
        member = kind_clusters[name]

        def ready_pod(member: Cluster = member) -> V1Pod | None:
            pods = member.core.list_namespaced_pod(
                kind_install.NAMESPACE, label_selector="app.kubernetes.io/name=suanli-exporter"
            ).items
            assert len(pods) <= 1, [p.metadata.name for p in pods]
            ready = pods and any(
                c.type == "Ready" and c.status == "True" for c in pods[0].status.conditions or []
            )
            return pods[0] if ready else None

        # One pod, on the kind node, Ready: its readiness probe answered through the pod network.
        pod = wait_for(ready_pod, timeout=TIMEOUTS.job_complete, what=f"{name}'s exporter Ready")
        node = member.core.read_node(pod.spec.node_name)
        assert node.metadata.labels.get(NODE_LABEL) == "true"
        assert pod.spec.containers[0].image == suanli_installed.exporter

        # Through the API server's proxy to the pod: the real exporter's /metrics, whose NVML
        # answers come from the stand-in library inside the image. The kubelet's probe may
        # reach the pod a moment before the API server's route to it exists (503, dial
        # timeout): that is retried, a bounded while.
        def scraped(member: Cluster = member, pod: V1Pod = pod) -> str | None:
            try:
                text: str = client.CoreV1Api(member.api).connect_get_namespaced_pod_proxy_with_path(
                    f"{pod.metadata.name}:9400", kind_install.NAMESPACE, "metrics"
                )
            except ApiException as error:
                if error.status == 503:
                    return None
                raise
            return text

        metrics = wait_for(
            scraped, timeout=3 * TIMEOUTS.condition_stable, what=f"{name}'s exporter /metrics"
        )
        utilization = [
            line for line in metrics.splitlines() if line.startswith("DCGM_FI_DEV_GPU_UTIL{")
        ]
        assert len(utilization) == FAKE_GPUS, metrics[:2000]
        assert all(f'Hostname="{node.metadata.name}"' in line for line in utilization)
