"""Training jobs on members: gang rendezvous, tenant data copies, failures explained, cost first.

Nothing executes in kwok pods, so each test checks what the member's API serves: the headless
Service and the EndpointSlices its DNS answers from, the pods' hostnames and variables, the
copies of Secrets and ConfigMaps, and the pod statuses the Job controller acts on.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.kube import Cluster, kubectl
from e2e.tenant import GROUP, VERSION, Tenant, compute_job, wait_member_free_gpus
from suanli.devenv.operator_process import OperatorProcess
from suanli.kits.waiting import TIMEOUTS, wait_for
from suanli.members.rendezvous import COMPLETION_INDEX_ANNOTATION, RENDEZVOUS_PORT, service_name


@pytest.fixture
def tenant(hub: Cluster, namespace: str, operator: OperatorProcess) -> Tenant:
    return Tenant(hub, namespace)


def _remote(tenant: Tenant, name: str) -> tuple[str, str]:
    """(namespace, name) of the job's remote Job on its member."""
    ref = tenant.job(name)["status"]["remoteRef"]
    return ref["namespace"], ref["name"]


def _env(container: Any) -> dict[str, Any]:
    return {e.name: (e.value if e.value is not None else e.value_from) for e in container.env or []}


def test_a_gangs_pods_resolve_each_other_by_the_headless_services_names(
    tenant: Tenant, clusters: dict[str, Cluster]
) -> None:
    member = clusters["member-a"]
    wait_member_free_gpus(clusters["hub"], "member-a", "H100", 32)
    tenant.submit(compute_job("gang", replicas=3, gpus=2, models=["H100"], run_for="10m"))
    tenant.wait_phase("gang", "Running", timeout=TIMEOUTS.job_complete)
    namespace, job_name = _remote(tenant, "gang")
    service = service_name(job_name)

    svc = member.core.read_namespaced_service(service, namespace)
    assert svc.spec.cluster_ip == "None" and svc.spec.publish_not_ready_addresses
    assert [p.port for p in svc.spec.ports] == [RENDEZVOUS_PORT]
    (owner,) = svc.metadata.owner_references
    assert (owner.kind, owner.name) == ("Job", job_name)

    pods = member.core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}").items
    assert len(pods) == 3
    by_rank: dict[str, Any] = {}
    for pod in pods:
        index = pod.metadata.annotations[COMPLETION_INDEX_ANNOTATION]
        assert pod.spec.hostname == f"{job_name}-{index}"
        assert pod.spec.subdomain == service
        env = _env(pod.spec.containers[0])
        assert env["MASTER_ADDR"] == f"{job_name}-0.{service}.{namespace}.svc"
        assert env["MASTER_PORT"] == str(RENDEZVOUS_PORT)
        assert (env["NNODES"], env["NPROC_PER_NODE"], env["WORLD_SIZE"]) == ("3", "2", "6")
        rank_from = env["NODE_RANK"].field_ref.field_path
        assert rank_from == f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"
        assert env["PET_NODE_RANK"].field_ref.field_path == rank_from
        by_rank[index] = pod
    assert sorted(by_rank) == ["0", "1", "2"]

    # The DNS records: the EndpointSlices of the Service, one named endpoint per replica.
    discovery = client.DiscoveryV1Api(member.api)

    def named_endpoints() -> dict[str, list[str]] | None:
        slices = discovery.list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service}"
        ).items
        named = {
            e.hostname: list(e.addresses) for s in slices for e in s.endpoints or [] if e.hostname
        }
        return named if len(named) == 3 else None

    named = wait_for(named_endpoints, timeout=TIMEOUTS.api_ready, what="3 named endpoints")
    for index, pod in by_rank.items():
        assert named[f"{job_name}-{index}"] == [pod.status.pod_ip]
    master_host = f"{job_name}-0"
    assert named[master_host] == [by_rank["0"].status.pod_ip]

    # Removed with the job: the Service goes with its Job.
    tenant.custom.delete_namespaced_custom_object(
        GROUP, VERSION, tenant.namespace, "computejobs", "gang"
    )

    def service_gone() -> bool:
        try:
            member.core.read_namespaced_service(service, namespace)
        except ApiException as error:
            return error.status == 404
        return False

    wait_for(service_gone, timeout=TIMEOUTS.job_complete, what="the Service to go with its Job")


def _with_data(name: str, run_for: str) -> dict[str, Any]:
    body = compute_job(name, models=["H100"], run_for=run_for)
    spec = body["spec"]["template"]["spec"]
    spec["containers"][0]["envFrom"] = [{"secretRef": {"name": "creds"}}]
    spec["containers"][0]["volumeMounts"] = [{"name": "settings", "mountPath": "/etc/train"}]
    spec["volumes"] = [{"name": "settings", "configMap": {"name": "settings"}}]
    return body


def test_secrets_and_configmaps_are_copied_for_the_job_and_removed_after_it(
    tenant: Tenant, hub: Cluster, clusters: dict[str, Cluster]
) -> None:
    member = clusters["member-a"]
    hub.core.create_namespaced_secret(
        tenant.namespace, {"metadata": {"name": "creds"}, "stringData": {"TOKEN": "s3cret"}}
    )
    hub.core.create_namespaced_config_map(
        tenant.namespace, {"metadata": {"name": "settings"}, "data": {"lr": "0.001"}}
    )
    tenant.submit(_with_data("data", run_for="8s"))
    tenant.wait_phase("data", "Running", timeout=TIMEOUTS.job_complete)
    namespace, job_name = _remote(tenant, "data")
    secret = member.core.read_namespaced_secret(f"{job_name}-creds", namespace)
    assert base64.b64decode(secret.data["TOKEN"]).decode() == "s3cret"
    config_map = member.core.read_namespaced_config_map(f"{job_name}-settings", namespace)
    assert config_map.data == {"lr": "0.001"}
    remote = member.batch.read_namespaced_job(job_name, namespace)
    pod_spec = remote.spec.template.spec
    assert pod_spec.containers[0].env_from[0].secret_ref.name == f"{job_name}-creds"
    assert pod_spec.volumes[0].config_map.name == f"{job_name}-settings"

    tenant.wait_phase("data", "Succeeded", timeout=TIMEOUTS.job_complete)

    def copies_gone() -> bool:
        selector = f"suanli.io/job-uid={tenant.job('data')['metadata']['uid']}"
        return not (
            member.core.list_namespaced_secret(namespace, label_selector=selector).items
            or member.core.list_namespaced_config_map(namespace, label_selector=selector).items
        )

    wait_for(copies_gone, timeout=TIMEOUTS.api_ready, what="the copies to be removed")
    # The outcome is recorded: the member may now remove the Job, after its TTL.
    wait_for(
        lambda: (
            member.batch.read_namespaced_job(job_name, namespace).spec.ttl_seconds_after_finished
            == 3600
        ),
        timeout=TIMEOUTS.api_ready,
        what="the finished remote Job to get its TTL",
    )
    tenant.assert_ledger_balanced()


def test_a_job_naming_a_missing_secret_is_refused_with_the_field_named(tenant: Tenant) -> None:
    with pytest.raises(ApiException) as refused:
        tenant.submit(_with_data("missing", run_for="1s"))
    assert refused.value.status in (400, 403)
    message = refused.value.body
    assert "spec.template.spec.containers[0].envFrom[0].secretRef.name" in message
    assert "Secret 'creds' does not exist" in message
    assert "spec.template.spec.volumes[0].configMap.name" in message


def test_a_failed_pod_leaves_its_exit_code_and_reason_in_status_and_events(
    tenant: Tenant, hub: Cluster, clusters: dict[str, Cluster]
) -> None:
    member = clusters["member-a"]
    tenant.submit(compute_job("oom", models=["H100"], run_for="10m"))
    tenant.wait_phase("oom", "Running", timeout=TIMEOUTS.job_complete)
    namespace, job_name = _remote(tenant, "oom")
    (pod,) = member.core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}").items
    # What a kubelet reports for a container the kernel killed for its memory.
    member.core.patch_namespaced_pod_status(
        pod.metadata.name,
        namespace,
        {
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {
                        "name": "main",
                        "image": "registry.example/train:1",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": 137,
                                "reason": "OOMKilled",
                                "message": "torch.OutOfMemoryError: CUDA out of memory",
                                "startedAt": "2026-01-01T00:00:00Z",
                                "finishedAt": "2026-01-01T00:01:00Z",
                            }
                        },
                    }
                ],
            }
        },
    )
    status = tenant.wait_phase("oom", "Failed", timeout=TIMEOUTS.job_complete)["status"]
    (failure,) = status["failures"]
    assert failure["exitCode"] == 137 and failure["reason"] == "OOMKilled"
    assert failure["oomKilled"] is True and failure["replica"] == 0
    assert failure["cluster"] == "member-a" and failure["node"] == pod.spec.node_name
    assert "CUDA out of memory" in failure["message"]

    def failed_event() -> Any:
        events = hub.core.list_namespaced_event(
            tenant.namespace, field_selector="involvedObject.name=oom"
        ).items
        return next((e for e in events if e.reason == "Failed"), None)

    event = wait_for(failed_event, timeout=TIMEOUTS.condition_stable, what="the Failed Event")
    assert "exited with code 137 (OOMKilled)" in event.message
    assert pod.spec.node_name in event.message
    described = kubectl(hub, "-n", tenant.namespace, "describe", "computejob", "oom").stdout
    assert "Exit Code:" in described and "137" in described and "OOMKilled" in described
    tenant.assert_ledger_balanced()


def test_the_dry_run_warning_gives_the_estimate_and_the_plugin_prints_the_same(
    tenant: Tenant, hub: Cluster, tmp_path: Any
) -> None:
    manifest = tmp_path / "job.yaml"
    job = compute_job("costly", replicas=4, gpus=8, models=["H100"])
    manifest.write_text(yaml.safe_dump(job))
    answer = kubectl(hub, "-n", tenant.namespace, "create", "--dry-run=server", "-f", str(manifest))
    warnings = [
        line.removeprefix("Warning: suanli estimate: ")
        for line in answer.stderr.splitlines()
        if line.startswith("Warning: suanli estimate: ")
    ]
    (warning,) = warnings
    # 32 GPUs x 1h at member-a's H100 price (28.00): 896.00, nothing spent yet.
    assert warning.startswith("worst case 896.00 CNY (32 GPUs x 1h x 28.00 CNY/GPU-hour")
    assert "would hold it and have 999104.00 CNY left" in warning
    assert tenant.jobs() == []  # a dry run stores nothing
    plugin = subprocess.run(
        [
            sys.executable,
            "-m",
            "suanli.plugin",
            "--kubeconfig",
            hub.info.kubeconfig,
            "-n",
            tenant.namespace,
            "estimate",
            "-f",
            str(manifest),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert plugin.returncode == 0, plugin.stderr
    assert plugin.stdout.splitlines() == [warning]
