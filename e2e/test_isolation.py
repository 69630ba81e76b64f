"""Tenant isolation on real control planes: what a template may hold, checked twice.

The hub refuses, at `kubectl apply` by a tenant, every template that would give its pod more
than it may have (host access, privilege, GPUs it does not pay for, a say in placement), and
nothing of it reaches a member. The member enforces the same level itself: the namespaces suanli
creates there carry Pod Security admission labels, so the member's own API server refuses a
privileged pod whoever sends it. A member that requires `restricted` only gets templates that
meet it, and the job's condition says why it was passed over.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.kube import Cluster
from e2e.tenant import (
    GROUP,
    VERSION,
    Tenant,
    apply_as_tenant,
    compute_job,
    tenant_identity,
    voucher,
)
from suanli.devenv.operator_process import OperatorProcess
from suanli.kits.waiting import TIMEOUTS, wait_for
from suanli.members.workload import POD_SECURITY_VERSION

Obj = dict[str, Any]
BASE = "spec.template.spec"
C0 = f"{BASE}.containers[0]"

# A template that meets the restricted level: what a careful tenant writes.
RESTRICTED_SECURITY: Obj = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER_SECURITY: Obj = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def _template(**pod: Any) -> Obj:
    """A minimal pod spec with ``pod`` merged in; containers[0] is "main"."""
    spec: Obj = {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "registry.example/train:1"}],
    }
    spec.update(copy.deepcopy(pod))
    return spec


def _main(**container: Any) -> list[Obj]:
    return [{"name": "main", "image": "registry.example/train:1", **container}]


def _gpu(resource: str, count: str = "8") -> Obj:
    return {"limits": {resource: count}}


# Each entry: (id, pod spec, field paths the refusal must name).
DANGEROUS: list[tuple[str, Obj, list[str]]] = [
    (
        "privileged",
        _template(containers=_main(securityContext={"privileged": True})),
        [f"{C0}.securityContext.privileged"],
    ),
    ("host-pid", _template(hostPID=True), [f"{BASE}.hostPID"]),
    ("host-network", _template(hostNetwork=True), [f"{BASE}.hostNetwork"]),
    ("host-ipc", _template(hostIPC=True), [f"{BASE}.hostIPC"]),
    (
        "host-path",
        _template(
            volumes=[{"name": "root", "hostPath": {"path": "/"}}],
            containers=_main(volumeMounts=[{"name": "root", "mountPath": "/host"}]),
        ),
        [f"{BASE}.volumes[0].hostPath"],
    ),
    (
        "host-port",
        _template(containers=_main(ports=[{"containerPort": 80, "hostPort": 80}])),
        [f"{C0}.ports[0].hostPort"],
    ),
    (
        "capability-sys-admin",
        _template(containers=_main(securityContext={"capabilities": {"add": ["SYS_ADMIN"]}})),
        [f"{C0}.securityContext.capabilities.add[0]"],
    ),
    (
        "unsafe-sysctl",
        _template(securityContext={"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}),
        [f"{BASE}.securityContext.sysctls[0]"],
    ),
    (
        "proc-mount-unmasked",
        _template(containers=_main(securityContext={"procMount": "Unmasked"})),
        [f"{C0}.securityContext.procMount"],
    ),
    (
        "seccomp-unconfined",
        _template(securityContext={"seccompProfile": {"type": "Unconfined"}}),
        [f"{BASE}.securityContext.seccompProfile.type"],
    ),
    (
        "selinux-type",
        _template(containers=_main(securityContext={"seLinuxOptions": {"type": "spc_t"}})),
        [f"{C0}.securityContext.seLinuxOptions.type"],
    ),
    (
        "windows-host-process",
        _template(securityContext={"windowsOptions": {"hostProcess": True}}),
        [f"{BASE}.securityContext.windowsOptions.hostProcess"],
    ),
    (
        "init-container-gpus",
        _template(
            initContainers=[{"name": "warm", "image": "x", "resources": _gpu("nvidia.com/gpu")}]
        ),
        [f"{BASE}.initContainers[0].resources.limits[nvidia.com/gpu]"],
    ),
    (
        "sidecar-ascend",
        _template(
            initContainers=[
                {
                    "name": "side",
                    "image": "x",
                    "restartPolicy": "Always",
                    "resources": _gpu("huawei.com/Ascend910"),
                }
            ]
        ),
        [f"{BASE}.initContainers[0].resources.limits[huawei.com/Ascend910]"],
    ),
    (
        "main-container-mig",
        _template(containers=_main(resources=_gpu("nvidia.com/mig-1g.10gb", "1"))),
        [f"{C0}.resources.limits[nvidia.com/mig-1g.10gb]"],
    ),
    (
        "visible-devices-env",
        _template(containers=_main(env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}])),
        [f"{C0}.env[0]"],
    ),
    ("node-name", _template(nodeName="member-a-h100-0"), [f"{BASE}.nodeName"]),
    (
        "gpu-node-selector",
        _template(nodeSelector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}),
        [f"{BASE}.nodeSelector[nvidia.com/gpu.product]"],
    ),
    (
        "toleration",
        _template(tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}]),
        [f"{BASE}.tolerations"],
    ),
    ("runtime-class", _template(runtimeClassName="nvidia"), [f"{BASE}.runtimeClassName"]),
    (
        "service-account",
        _template(serviceAccountName="default"),
        [f"{BASE}.serviceAccountName"],
    ),
    (
        "ephemeral-container-privileged",
        _template(
            ephemeralContainers=[
                {"name": "debug", "image": "x", "securityContext": {"privileged": True}}
            ]
        ),
        [f"{BASE}.ephemeralContainers[0].securityContext.privileged"],
    ),
    (
        # The report, whole: one refusal names every field.
        "root-on-the-node",
        _template(
            hostPID=True,
            hostNetwork=True,
            volumes=[{"name": "root", "hostPath": {"path": "/"}}],
            containers=_main(
                securityContext={"privileged": True},
                volumeMounts=[{"name": "root", "mountPath": "/host"}],
            ),
            initContainers=[{"name": "grab", "image": "x", "resources": _gpu("nvidia.com/gpu")}],
        ),
        [
            f"{BASE}.hostPID",
            f"{BASE}.hostNetwork",
            f"{BASE}.volumes[0].hostPath",
            f"{C0}.securityContext.privileged",
            f"{BASE}.initContainers[0].resources.limits[nvidia.com/gpu]",
        ],
    ),
    (
        "sidecar-with-visible-devices",
        _template(
            initContainers=[
                {
                    "name": "side",
                    "image": "x",
                    "restartPolicy": "Always",
                    "resources": _gpu("huawei.com/Ascend910"),
                    "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}],
                }
            ]
        ),
        [
            f"{BASE}.initContainers[0].resources.limits[huawei.com/Ascend910]",
            f"{BASE}.initContainers[0].env[0]",
        ],
    ),
]


@pytest.fixture(scope="module")
def tenant_namespace(clusters: dict[str, Cluster], operator: OperatorProcess) -> Iterator[str]:
    """A hub namespace with a voucher and a ServiceAccount bound to ``suanli-tenant``."""
    hub = clusters["hub"]
    name = f"t-iso-{uuid.uuid4().hex[:8]}"
    hub.core.create_namespace({"metadata": {"name": name, "labels": {"suanli.io/e2e": "true"}}})
    client.CustomObjectsApi(hub.api).create_namespaced_custom_object(
        GROUP, VERSION, name, "voucherquotas", voucher("budget", "100000.00")
    )
    tenant_identity(hub, name)
    try:
        yield name
    finally:
        hub.core.delete_namespace(name, propagation_policy="Background")


@pytest.mark.parametrize(
    ("template", "paths"),
    [pytest.param(template, paths, id=case) for case, template, paths in DANGEROUS],
)
def test_a_dangerous_template_is_refused_at_apply_and_names_its_fields(
    clusters: dict[str, Cluster], tenant_namespace: str, template: Obj, paths: list[str]
) -> None:
    hub = clusters["hub"]
    body = compute_job(f"bad-{uuid.uuid4().hex[:6]}")
    body["spec"]["template"]["spec"] = template
    applied = apply_as_tenant(hub, tenant_namespace, body)
    assert applied.returncode != 0, applied.stdout
    assert "denied the request" in applied.stderr, applied.stderr
    for path in paths:
        assert path in applied.stderr, f"{path} not named in: {applied.stderr}"
    # Nothing was stored, so nothing can be dispatched.
    stored = client.CustomObjectsApi(hub.api).list_namespaced_custom_object(
        GROUP, VERSION, tenant_namespace, "computejobs"
    )
    assert stored["items"] == []
    for name in ("member-a", "member-b"):
        jobs = clusters[name].batch.list_namespaced_job(f"suanli-{tenant_namespace}")
        assert jobs.items == []


def test_the_tenant_can_still_apply_a_plain_template(
    clusters: dict[str, Cluster], tenant_namespace: str
) -> None:
    body = compute_job("plain", run_for="1s")
    applied = apply_as_tenant(clusters["hub"], tenant_namespace, body)
    assert applied.returncode == 0, applied.stderr


@pytest.fixture
def tenant(hub: Cluster, namespace: str, operator: OperatorProcess) -> Tenant:
    return Tenant(hub, namespace)


def _remote_job(member: Cluster, namespace: str) -> Obj | None:
    jobs = member.batch.list_namespaced_job(f"suanli-{namespace}").items
    return member.api.sanitize_for_serialization(jobs[0]) if jobs else None


def test_the_member_namespace_enforces_the_level_and_remote_pods_are_pinned(
    tenant: Tenant, clusters: dict[str, Cluster], namespace: str
) -> None:
    tenant.submit(compute_job("long", models=["H100"], run_for="60s"))
    member = clusters["member-a"]
    remote = wait_for(
        lambda: _remote_job(member, namespace),
        timeout=TIMEOUTS.job_complete,
        what="the remote Job on member-a",
    )
    pod = remote["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert {
        "key": "nvidia.com/gpu.product",
        "operator": "In",
        "values": ["NVIDIA-H100-80GB-HBM3"],
    } in terms[0]["matchExpressions"]

    labels = member.core.read_namespace(f"suanli-{namespace}").metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/enforce-version"] == POD_SECURITY_VERSION
    assert labels["pod-security.kubernetes.io/warn"] == "baseline"
    assert labels["pod-security.kubernetes.io/audit"] == "baseline"

    # The member's own admission refuses a privileged pod there, whoever sends it: a hub bug
    # alone cannot open the door.
    privileged = {
        "metadata": {"name": "escape"},
        "spec": {
            "containers": [{"name": "main", "image": "x", "securityContext": {"privileged": True}}],
            "hostPID": True,
        },
    }
    with pytest.raises(ApiException) as refused:
        member.core.create_namespaced_pod(f"suanli-{namespace}", privileged)
    assert refused.value.status == 403
    assert "violates PodSecurity" in str(refused.value.body), refused.value.body
    tenant.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "computejobs", "long")


@pytest.fixture
def restricted_member_b(hub: Cluster) -> Iterator[str]:
    custom = client.CustomObjectsApi(hub.api)

    def set_level(level: str) -> None:
        custom.patch_cluster_custom_object(
            GROUP, VERSION, "memberclusters", "member-b", {"spec": {"podSecurityLevel": level}}
        )

    set_level("restricted")
    try:
        yield "member-b"
    finally:
        set_level("baseline")


def test_a_restricted_member_gets_only_templates_that_meet_restricted(
    tenant: Tenant, clusters: dict[str, Cluster], namespace: str, restricted_member_b: str
) -> None:
    # A800 on member-b (22.00) is cheaper than H100 on member-a (28.00): only the level can
    # send the first job to member-a.
    tenant.submit(compute_job("baseline-only", models=["H100", "A800"], run_for="1s"))
    done = tenant.wait_phase("baseline-only", "Succeeded", timeout=TIMEOUTS.job_complete)
    assert done["status"]["cluster"] == "member-a"
    dispatched = next(c for c in done["status"]["conditions"] if c["type"] == "Dispatched")
    message = dispatched["message"]
    assert "member-b: requires Pod Security level restricted" in message, message
    assert f"{BASE}." in message, message

    hardened = compute_job("hardened", models=["H100", "A800"], run_for="1s")
    hardened["spec"]["template"]["spec"]["securityContext"] = RESTRICTED_SECURITY
    hardened["spec"]["template"]["spec"]["containers"][0]["securityContext"] = (
        RESTRICTED_CONTAINER_SECURITY
    )
    tenant.submit(hardened)
    # Succeeded means the member's restricted namespace admitted its pods.
    done = tenant.wait_phase("hardened", "Succeeded", timeout=TIMEOUTS.job_complete)
    assert done["status"]["cluster"] == "member-b"
    labels = clusters["member-b"].core.read_namespace(f"suanli-{namespace}").metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
