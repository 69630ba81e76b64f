"""The pod-template policy: tables of allowed and refused templates and the paths they name.

Each refused case starts from a plain template (image, command, cpu/memory, an emptyDir and a
configMap volume), adds one thing, and must get exactly the listed field paths: no path missing,
none extra. Dangerous container fields are tried in every container kind (containers, init
containers, sidecars, ephemeral containers). Paths are the contract; wording is not tested.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest

from suanli.api.accelerators import is_accelerator_resource, is_device_env
from suanli.api.podpolicy import (
    PodSecurityLevel,
    highest_level,
    level_errors,
    template_errors,
)

SPEC = "spec.template.spec"
ANNOTATIONS = "spec.template.metadata.annotations"

# --- builders -----------------------------------------------------------------------------------


def plain() -> dict[str, Any]:
    """What most jobs look like: allowed, and meets baseline but not restricted."""
    return {
        "metadata": {"labels": {"app": "train"}, "annotations": {"team": "nlp"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "registry.example/train:1",
                    "command": ["python", "train.py"],
                    "resources": {
                        "requests": {"cpu": "8", "memory": "64Gi"},
                        "limits": {"cpu": "8", "memory": "64Gi"},
                    },
                    "volumeMounts": [
                        {"name": "scratch", "mountPath": "/scratch"},
                        {"name": "config", "mountPath": "/etc/train"},
                    ],
                }
            ],
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "config", "configMap": {"name": "train-config"}},
            ],
        },
    }


HARDENED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def hardened() -> dict[str, Any]:
    """The plain template set up to meet restricted."""
    template = plain()
    template["spec"]["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    template["spec"]["containers"][0]["securityContext"] = copy.deepcopy(HARDENED_CONTAINER)
    return template


# Where a container-level case puts its fields, and the path prefix its errors must carry.
KINDS = {
    "container": "containers[0]",
    "init": "initContainers[0]",
    "sidecar": "initContainers[0]",
    "ephemeral": "ephemeralContainers[0]",
}


def with_container(template: dict[str, Any], kind: str, fields: dict[str, Any]) -> None:
    """Put ``fields`` into the main container, or into a new container of ``kind``."""
    spec = template["spec"]
    if kind == "container":
        spec["containers"][0].update(copy.deepcopy(fields))
        return
    container: dict[str, Any] = {"name": "helper", "image": "busybox", **copy.deepcopy(fields)}
    if kind == "sidecar":  # a sidecar is an init container that keeps running
        container["restartPolicy"] = "Always"
    list_name = KINDS[kind].split("[")[0]
    spec.setdefault(list_name, []).append(container)


@dataclass(frozen=True)
class Case:
    id: str
    pod: dict[str, Any] = field(default_factory=dict)  # merged into the pod spec
    annotations: dict[str, Any] = field(default_factory=dict)
    volumes: list[dict[str, Any]] = field(default_factory=list)  # appended
    paths: list[str] = field(default_factory=list)

    def template(self) -> dict[str, Any]:
        template = plain()
        template["spec"].update(copy.deepcopy(self.pod))
        template["metadata"]["annotations"].update(self.annotations)
        template["spec"]["volumes"] += copy.deepcopy(self.volumes)
        return template


def paths(template: dict[str, Any]) -> list[str]:
    return sorted(error.path for error in template_errors(template))


# --- container fields, in every container kind --------------------------------------------------

# (id, fields, paths below the container)
CONTAINER_REFUSALS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("privileged", {"securityContext": {"privileged": True}}, ["securityContext.privileged"]),
    (
        "capability-sys-admin",
        {"securityContext": {"capabilities": {"add": ["CHOWN", "SYS_ADMIN"]}}},
        ["securityContext.capabilities.add[1]"],
    ),
    (
        "capability-lower-case",
        {"securityContext": {"capabilities": {"add": ["sys_ptrace"]}}},
        ["securityContext.capabilities.add[0]"],
    ),
    (
        "host-port",
        {"ports": [{"containerPort": 80}, {"containerPort": 8080, "hostPort": 8080}]},
        ["ports[1].hostPort"],
    ),
    (
        "proc-mount",
        {"securityContext": {"procMount": "Unmasked"}},
        ["securityContext.procMount"],
    ),
    (
        "seccomp-unconfined",
        {"securityContext": {"seccompProfile": {"type": "Unconfined"}}},
        ["securityContext.seccompProfile.type"],
    ),
    (
        "apparmor-unconfined",
        {"securityContext": {"appArmorProfile": {"type": "Unconfined"}}},
        ["securityContext.appArmorProfile.type"],
    ),
    (
        "selinux-type-user-role",
        {"securityContext": {"seLinuxOptions": {"type": "spc_t", "user": "root", "role": "r"}}},
        [
            "securityContext.seLinuxOptions.type",
            "securityContext.seLinuxOptions.user",
            "securityContext.seLinuxOptions.role",
        ],
    ),
    (
        "host-process",
        {"securityContext": {"windowsOptions": {"hostProcess": True}}},
        ["securityContext.windowsOptions.hostProcess"],
    ),
    (
        "probe-host",
        {
            "livenessProbe": {"httpGet": {"port": 80, "host": "10.0.0.1"}},
            "startupProbe": {"tcpSocket": {"port": 22, "host": "node.internal"}},
            "lifecycle": {"preStop": {"httpGet": {"port": 80, "host": "169.254.169.254"}}},
        },
        [
            "livenessProbe.httpGet.host",
            "startupProbe.tcpSocket.host",
            "lifecycle.preStop.httpGet.host",
        ],
    ),
    (
        "gpu-limit",
        {"resources": {"limits": {"nvidia.com/gpu": 8, "cpu": 4}}},
        ["resources.limits[nvidia.com/gpu]"],
    ),
    (
        "gpu-request-and-limit",
        {"resources": {"requests": {"amd.com/gpu": 1}, "limits": {"amd.com/gpu": 1}}},
        ["resources.limits[amd.com/gpu]", "resources.requests[amd.com/gpu]"],
    ),
    (
        "resource-claims",
        {"resources": {"claims": [{"name": "gpu"}]}},
        ["resources.claims"],
    ),
    (
        "device-env",
        {
            "env": [
                {"name": "BATCH", "value": "8"},
                {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
            ]
        },
        ["env[1].name"],
    ),
    (
        "device-env-from-field",
        {
            "env": [
                {"name": "ASCEND_VISIBLE_DEVICES", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}
            ]
        },
        ["env[0].name"],
    ),
    (
        "nvidia-device-request-mount",
        {
            "volumeMounts": [
                {"name": "scratch", "mountPath": "/var/run/nvidia-container-devices/all"},
                {"name": "scratch", "mountPath": "//run/nvidia-container-devices/"},
                {"name": "scratch", "mountPath": "/tmp/../var/run/nvidia-container-devices/0"},
            ]
        },
        ["volumeMounts[0].mountPath", "volumeMounts[1].mountPath", "volumeMounts[2].mountPath"],
    ),
]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize(
    ("fields", "expected"),
    [pytest.param(fields, expected, id=case) for case, fields, expected in CONTAINER_REFUSALS],
)
def test_container_field_is_refused_in_every_container_kind(
    kind: str, fields: dict[str, Any], expected: list[str]
) -> None:
    template = plain()
    with_container(template, kind, fields)
    prefix = f"{SPEC}.{KINDS[kind]}"
    assert paths(template) == sorted(f"{prefix}.{path}" for path in expected)


# --- pod fields ---------------------------------------------------------------------------------

POD_REFUSALS = [
    # host access
    Case("host-network", pod={"hostNetwork": True}, paths=[f"{SPEC}.hostNetwork"]),
    Case("host-pid", pod={"hostPID": True}, paths=[f"{SPEC}.hostPID"]),
    Case("host-ipc", pod={"hostIPC": True}, paths=[f"{SPEC}.hostIPC"]),
    Case(
        "host-process-pod",
        pod={"securityContext": {"windowsOptions": {"hostProcess": True}}},
        paths=[f"{SPEC}.securityContext.windowsOptions.hostProcess"],
    ),
    Case(
        "host-path",
        volumes=[{"name": "root", "hostPath": {"path": "/"}}],
        paths=[f"{SPEC}.volumes[2].hostPath"],
    ),
    # privilege
    Case(
        "unsafe-sysctls",
        pod={
            "securityContext": {
                "sysctls": [
                    {"name": "net.ipv4.tcp_syncookies", "value": "1"},
                    {"name": "kernel.msgmax", "value": "65536"},
                    {"name": "net.core.somaxconn", "value": "1024"},
                ]
            }
        },
        paths=[
            f"{SPEC}.securityContext.sysctls[1].name",
            f"{SPEC}.securityContext.sysctls[2].name",
        ],
    ),
    Case(
        "seccomp-unconfined-pod",
        pod={"securityContext": {"seccompProfile": {"type": "Unconfined"}}},
        paths=[f"{SPEC}.securityContext.seccompProfile.type"],
    ),
    Case(
        "seccomp-unconfined-annotations",
        annotations={
            "seccomp.security.alpha.kubernetes.io/pod": "unconfined",
            "container.seccomp.security.alpha.kubernetes.io/main": "unconfined",
        },
        paths=[
            f"{ANNOTATIONS}[seccomp.security.alpha.kubernetes.io/pod]",
            f"{ANNOTATIONS}[container.seccomp.security.alpha.kubernetes.io/main]",
        ],
    ),
    Case(
        "apparmor-unconfined-pod",
        pod={"securityContext": {"appArmorProfile": {"type": "Unconfined"}}},
        paths=[f"{SPEC}.securityContext.appArmorProfile.type"],
    ),
    Case(
        "apparmor-annotation",
        annotations={"container.apparmor.security.beta.kubernetes.io/main": "unconfined"},
        paths=[f"{ANNOTATIONS}[container.apparmor.security.beta.kubernetes.io/main]"],
    ),
    Case(
        "selinux-pod",
        pod={"securityContext": {"seLinuxOptions": {"type": "unconfined_t"}}},
        paths=[f"{SPEC}.securityContext.seLinuxOptions.type"],
    ),
    # volumes the member's node would mount with its own reach
    Case(
        "network-volumes",
        volumes=[
            {"name": "nfs", "nfs": {"server": "10.0.0.2", "path": "/export"}},
            {"name": "git", "gitRepo": {"repository": "https://example.invalid/r.git"}},
            {"name": "iscsi", "iscsi": {"targetPortal": "10.0.0.3", "iqn": "x", "lun": 0}},
            {"name": "flex", "flexVolume": {"driver": "example/driver"}},
            {"name": "ceph", "cephfs": {"monitors": ["10.0.0.4"]}},
        ],
        paths=[
            f"{SPEC}.volumes[2].nfs",
            f"{SPEC}.volumes[3].gitRepo",
            f"{SPEC}.volumes[4].iscsi",
            f"{SPEC}.volumes[5].flexVolume",
            f"{SPEC}.volumes[6].cephfs",
        ],
    ),
    # steering
    Case("node-name", pod={"nodeName": "gpu-node-7"}, paths=[f"{SPEC}.nodeName"]),
    Case(
        "node-selector",
        pod={
            "nodeSelector": {
                "kubernetes.io/arch": "amd64",
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                "suanli.io/member": "a",
                "huawei.com/npu.chip": "910B",
                "kubernetes.io/hostname": "gpu-node-7",
                "node.kubernetes.io/instance-type": "p5.48xlarge",
                "feature.node.kubernetes.io/pci-0302_10de.present": "true",
            }
        },
        paths=[
            f"{SPEC}.nodeSelector[nvidia.com/gpu.product]",
            f"{SPEC}.nodeSelector[suanli.io/member]",
            f"{SPEC}.nodeSelector[huawei.com/npu.chip]",
            f"{SPEC}.nodeSelector[kubernetes.io/hostname]",
            f"{SPEC}.nodeSelector[node.kubernetes.io/instance-type]",
            f"{SPEC}.nodeSelector[feature.node.kubernetes.io/pci-0302_10de.present]",
        ],
    ),
    Case(
        "node-affinity",
        pod={
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/arch",
                                        "operator": "In",
                                        "values": ["a"],
                                    },
                                    {
                                        "key": "nvidia.com/gpu.memory",
                                        "operator": "Gt",
                                        "values": ["1"],
                                    },
                                ]
                            },
                            {
                                "matchFields": [
                                    {"key": "metadata.name", "operator": "In", "values": ["n"]}
                                ]
                            },
                        ]
                    },
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 1,
                            "preference": {
                                "matchExpressions": [
                                    {"key": "amd.com/gpu.family", "operator": "Exists"}
                                ]
                            },
                        }
                    ],
                }
            }
        },
        paths=[
            f"{SPEC}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms[0].matchExpressions[1].key",
            f"{SPEC}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms[1].matchFields[0]",
            f"{SPEC}.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0]"
            ".preference.matchExpressions[0].key",
        ],
    ),
    Case(
        "pod-affinity-other-namespaces",
        pod={
            "affinity": {
                "podAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": "kubernetes.io/hostname", "namespaceSelector": {}}
                    ]
                },
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 1,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "namespaces": ["suanli-other-tenant"],
                            },
                        }
                    ]
                },
            }
        },
        paths=[
            f"{SPEC}.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0]"
            ".namespaceSelector",
            f"{SPEC}.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0]"
            ".podAffinityTerm.namespaces",
        ],
    ),
    Case(
        "tolerations",
        pod={"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]},
        paths=[f"{SPEC}.tolerations"],
    ),
    Case(
        "scheduler-name", pod={"schedulerName": "hami-scheduler"}, paths=[f"{SPEC}.schedulerName"]
    ),
    Case("runtime-class", pod={"runtimeClassName": "nvidia"}, paths=[f"{SPEC}.runtimeClassName"]),
    # queue and accounting
    Case(
        "priority",
        pod={
            "priorityClassName": "system-node-critical",
            "priority": 2000001000,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        paths=[f"{SPEC}.priorityClassName", f"{SPEC}.priority", f"{SPEC}.preemptionPolicy"],
    ),
    Case("overhead", pod={"overhead": {"cpu": "250m"}}, paths=[f"{SPEC}.overhead"]),
    # credentials
    Case(
        "service-account",
        pod={"serviceAccountName": "admin", "serviceAccount": "admin"},
        paths=[f"{SPEC}.serviceAccountName", f"{SPEC}.serviceAccount"],
    ),
    Case(
        "automount-token",
        pod={"automountServiceAccountToken": True},
        paths=[f"{SPEC}.automountServiceAccountToken"],
    ),
    Case(
        "projected-token",
        volumes=[
            {
                "name": "token",
                "projected": {
                    "sources": [
                        {"configMap": {"name": "c"}},
                        {"serviceAccountToken": {"audience": "sts.amazonaws.com", "path": "t"}},
                    ]
                },
            }
        ],
        paths=[f"{SPEC}.volumes[2].projected.sources[1].serviceAccountToken"],
    ),
    # accelerators
    Case(
        "pod-resource-claims",
        pod={"resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}]},
        paths=[f"{SPEC}.resourceClaims"],
    ),
    Case(
        "pod-level-resources",
        pod={"resources": {"limits": {"cpu": "8", "huawei.com/Ascend910": 8}}},
        paths=[f"{SPEC}.resources.limits[huawei.com/Ascend910]"],
    ),
    Case(
        "cdi-annotation",
        annotations={"cdi.k8s.io/gpus": "nvidia.com/gpu=all"},
        paths=[f"{ANNOTATIONS}[cdi.k8s.io/gpus]"],
    ),
]


@pytest.mark.parametrize("case", POD_REFUSALS, ids=lambda case: case.id)
def test_pod_field_is_refused(case: Case) -> None:
    assert paths(case.template()) == sorted(case.paths)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_probes_at_the_nodes_loopback_meet_baseline_but_are_refused(host: str) -> None:
    template = plain()
    main = template["spec"]["containers"][0]
    main["readinessProbe"] = {"httpGet": {"port": 8080, "host": host}}
    assert level_errors(template, PodSecurityLevel.BASELINE) == []
    assert paths(template) == [f"{SPEC}.containers[0].readinessProbe.httpGet.host"]


def test_the_issues_example_gets_one_error_per_field() -> None:
    template = plain()
    template["spec"].update({"hostPID": True, "hostNetwork": True})
    template["spec"]["volumes"].append({"name": "root", "hostPath": {"path": "/"}})
    main = template["spec"]["containers"][0]
    main["securityContext"] = {"privileged": True}
    main["volumeMounts"].append({"name": "root", "mountPath": "/host"})
    template["spec"]["initContainers"] = [
        {"name": "grab", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": 8}}}
    ]
    assert paths(template) == sorted(
        [
            f"{SPEC}.hostPID",
            f"{SPEC}.hostNetwork",
            f"{SPEC}.volumes[2].hostPath",
            f"{SPEC}.containers[0].securityContext.privileged",
            f"{SPEC}.initContainers[0].resources.limits[nvidia.com/gpu]",
        ]
    )
    assert highest_level(template) is None


# --- accelerators: every vendor's resources, every device env var -------------------------------

ACCELERATOR_RESOURCES = [
    "nvidia.com/gpu",
    "nvidia.com/mig-1g.10gb",
    "nvidia.com/mig-3g.40gb",
    "nvidia.com/gpu.shared",
    "nvidia.com/gpumem",
    "nvidia.com/gpumem-percentage",
    "nvidia.com/gpucores",
    "amd.com/gpu",
    "huawei.com/Ascend910",
    "huawei.com/Ascend910B",
    "huawei.com/Ascend910B-memory",
    "huawei.com/Ascend310",
    "huawei.com/Ascend310P",
    "cambricon.com/mlu",
    "cambricon.com/vmlu",
    "hygon.com/dcu",
    "hygon.com/dcunum",
    "kunlunxin.com/xpu",
    "metax-tech.com/gpu",
    "iluvatar.com/gpu",
    "iluvatar.ai/gpu",
    "mthreads.com/gpu",
    "mthreads.com/vgpu",
    "gpu.intel.com/i915",
    "gpu.intel.com/xe",
    "habana.ai/gaudi",
    "enflame.com/gcu",
    "aws.amazon.com/neuroncore",
    "google.com/tpu",
    "example-vendor.io/gpu",  # a vendor the table does not know
]


@pytest.mark.parametrize("kind", ["container", "init", "ephemeral"])
@pytest.mark.parametrize("resource", ACCELERATOR_RESOURCES)
def test_every_vendors_accelerator_is_refused_in_every_container_kind(
    resource: str, kind: str
) -> None:
    template = plain()
    with_container(template, kind, {"resources": {"requests": {"memory": "1Gi", resource: "1"}}})
    prefix = f"{SPEC}.{KINDS[kind]}"
    assert paths(template) == [f"{prefix}.resources.requests[{resource}]"]


@pytest.mark.parametrize(
    "resource",
    ["cpu", "memory", "ephemeral-storage", "hugepages-2Mi", "rdma/hca", "example.com/fpga-net"],
)
def test_ordinary_resources_are_allowed(resource: str) -> None:
    assert not is_accelerator_resource(resource)
    template = plain()
    template["spec"]["containers"][0]["resources"]["limits"][resource] = "1"
    assert paths(template) == []


DEVICE_ENV = [
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_MIG_CONFIG_DEVICES",
    "NVIDIA_MIG_MONITOR_DEVICES",
    "NVIDIA_IMEX_CHANNELS",
    "NVIDIA_GDS",
    "NVIDIA_MOFED",
    "NVIDIA_NVSWITCH",
    "NVIDIA_GDRCOPY",
    "AMD_VISIBLE_DEVICES",
    "ASCEND_VISIBLE_DEVICES",
    "ASCEND_RUNTIME_OPTIONS",
    "ASCEND_RUNTIME_MOUNTS",
    "ASCEND_VNPU_SPECS",
    "ASCEND_ALLOW_LINK",
    "HABANA_VISIBLE_DEVICES",
    "HABANA_VISIBLE_MODULES",
    "MTHREADS_VISIBLE_DEVICES",
    "CUDA_DISABLE_CONTROL",
    "CUDA_DEVICE_MEMORY_LIMIT",
    "CUDA_DEVICE_MEMORY_LIMIT_0",
    "CUDA_DEVICE_SM_LIMIT",
    "GPU_CORE_UTILIZATION_POLICY",
]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("name", DEVICE_ENV)
def test_device_exposing_env_is_refused_in_every_container_kind(name: str, kind: str) -> None:
    template = plain()
    with_container(template, kind, {"env": [{"name": "HOME", "value": "/x"}, {"name": name}]})
    assert paths(template) == [f"{SPEC}.{KINDS[kind]}.env[1].name"]


# Read by user-space libraries to narrow the devices a process already has; they add none.
NARROWING_ENV = [
    "CUDA_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "ASCEND_RT_VISIBLE_DEVICES",
    "MLU_VISIBLE_DEVICES",
    "XPU_VISIBLE_DEVICES",
    "TOPS_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "NVIDIA_REQUIRE_CUDA",
    "nvidia_visible_devices",  # runtimes read the upper-case name only
]


@pytest.mark.parametrize("name", NARROWING_ENV)
def test_narrowing_env_is_allowed(name: str) -> None:
    assert not is_device_env(name)
    template = plain()
    template["spec"]["containers"][0]["env"] = [{"name": name, "value": "0"}]
    assert paths(template) == []


# --- what is allowed ----------------------------------------------------------------------------

ALLOWED = [
    Case("plain"),
    Case("explicitly-safe-values", pod={"hostNetwork": False, "hostPID": False, "hostIPC": False}),
    Case("share-process-namespace", pod={"shareProcessNamespace": True}),
    Case("user-namespace", pod={"hostUsers": False}),
    Case("host-aliases", pod={"hostAliases": [{"ip": "10.1.2.3", "hostnames": ["data"]}]}),
    Case(
        "dns",
        pod={"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["x"]}},
    ),
    Case("dns-default", pod={"dnsPolicy": "Default"}),
    Case(
        "safe-sysctls",
        pod={
            "securityContext": {
                "sysctls": [
                    {"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"},
                    {"name": "net.ipv4.tcp_keepalive_time", "value": "60"},
                    {"name": "kernel.shm_rmid_forced", "value": "1"},
                ]
            }
        },
    ),
    Case(
        "confined-profiles",
        pod={
            "securityContext": {
                "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"},
                "appArmorProfile": {"type": "RuntimeDefault"},
                "seLinuxOptions": {"type": "container_t", "level": "s0:c1,c2"},
            }
        },
        annotations={
            "container.apparmor.security.beta.kubernetes.io/main": "localhost/train",
            "container.seccomp.security.alpha.kubernetes.io/main": "runtime/default",
        },
    ),
    Case("arch-selector", pod={"nodeSelector": {"kubernetes.io/arch": "amd64"}}),
    Case(
        "gang-spreading",
        pod={
            "affinity": {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"app": "train"}},
                            "namespaces": [],
                        }
                    ]
                }
            },
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                }
            ],
        },
    ),
    Case("empty-tolerations", pod={"tolerations": []}),
    Case("no-token", pod={"automountServiceAccountToken": False}),
    Case(
        "restricted-volume-types",
        volumes=[
            {"name": "s", "secret": {"secretName": "s"}},
            {"name": "d", "downwardAPI": {"items": []}},
            {"name": "p", "projected": {"sources": [{"downwardAPI": {"items": []}}]}},
            {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
            {"name": "i", "csi": {"driver": "inline.storage.example"}},
        ],
    ),
]


@pytest.mark.parametrize("case", ALLOWED, ids=lambda case: case.id)
def test_allowed_template(case: Case) -> None:
    assert paths(case.template()) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE", "CHOWN"]}}},
        {"securityContext": {"privileged": False, "procMount": "Default"}},
        {"ports": [{"containerPort": 8080, "hostPort": 0}]},
        {"livenessProbe": {"httpGet": {"port": 8080, "host": ""}}},
        {"readinessProbe": {"tcpSocket": {"port": 8080}}},
        {"volumeMounts": [{"name": "scratch", "mountPath": "/var/run/nvidia-container-devicesX"}]},
        {"env": [{"name": "BATCH", "value": "8"}]},
    ],
)
@pytest.mark.parametrize("kind", list(KINDS))
def test_allowed_container_fields(kind: str, fields: dict[str, Any]) -> None:
    template = plain()
    with_container(template, kind, fields)
    assert paths(template) == []


@pytest.mark.parametrize(
    "template",
    [
        {},
        {"spec": None},
        {"metadata": ["x"], "spec": {"containers": "main"}},
        {"spec": {"containers": ["main", 3, None], "volumes": {"a": 1}}},
        {"spec": {"containers": [{"securityContext": ["x"], "env": "A=1", "ports": [1]}]}},
        {"spec": {"securityContext": {"sysctls": [None]}, "affinity": {"nodeAffinity": []}}},
        {"metadata": {"annotations": ["x"]}, "spec": {"nodeSelector": ["x"]}},
    ],
)
def test_shapes_the_schema_does_not_check_are_skipped_not_crashed_on(
    template: dict[str, Any],
) -> None:
    # The ComputeJob's own validation reports wrong shapes; the policy must just not fail on them.
    assert isinstance(template_errors(template), list)
    for level in PodSecurityLevel:
        assert isinstance(level_errors(template, level), list)
    assert highest_level(template) in (None, *PodSecurityLevel)


# --- levels -------------------------------------------------------------------------------------


def test_plain_template_meets_baseline_not_restricted() -> None:
    assert level_errors(plain(), PodSecurityLevel.BASELINE) == []
    assert highest_level(plain()) is PodSecurityLevel.BASELINE


def test_hardened_template_meets_restricted() -> None:
    assert template_errors(hardened()) == []
    assert level_errors(hardened(), PodSecurityLevel.RESTRICTED) == []
    assert highest_level(hardened()) is PodSecurityLevel.RESTRICTED


def test_restricted_names_every_field_of_a_plain_template() -> None:
    main = f"{SPEC}.containers[0].securityContext"
    assert sorted(e.path for e in level_errors(plain(), PodSecurityLevel.RESTRICTED)) == sorted(
        [
            f"{main}.allowPrivilegeEscalation",
            f"{main}.runAsNonRoot",
            f"{main}.seccompProfile.type",
            f"{main}.capabilities.drop",
        ]
    )


@dataclass(frozen=True)
class LevelCase:
    id: str
    pod_security: dict[str, Any] = field(default_factory=dict)  # replaces pod-level keys
    container_security: dict[str, Any] = field(default_factory=dict)  # replaces container keys
    volumes: list[dict[str, Any]] = field(default_factory=list)
    helper: dict[str, Any] | None = None  # an init container's securityContext
    paths: list[str] = field(default_factory=list)  # restricted's errors

    def template(self) -> dict[str, Any]:
        template = hardened()
        template["spec"]["securityContext"].update(self.pod_security)
        template["spec"]["containers"][0]["securityContext"].update(self.container_security)
        template["spec"]["volumes"] += self.volumes
        if self.helper is not None:
            with_container(template, "init", {"securityContext": self.helper})
        return template


MAIN = f"{SPEC}.containers[0].securityContext"
POD = f"{SPEC}.securityContext"

# Each breaks restricted and nothing else: the template still meets baseline.
BASELINE_ONLY = [
    LevelCase(
        "privilege-escalation",
        container_security={"allowPrivilegeEscalation": True},
        paths=[f"{MAIN}.allowPrivilegeEscalation"],
    ),
    LevelCase(
        "run-as-root-pod",
        pod_security={"runAsNonRoot": False},
        paths=[f"{POD}.runAsNonRoot"],
    ),
    LevelCase(
        "run-as-root-container",
        container_security={"runAsNonRoot": False},
        paths=[f"{MAIN}.runAsNonRoot"],
    ),
    LevelCase(
        "non-root-unset-everywhere",
        pod_security={"runAsNonRoot": None},
        paths=[f"{MAIN}.runAsNonRoot"],
    ),
    LevelCase(
        "user-zero",
        pod_security={"runAsUser": 0},
        container_security={"runAsUser": 0},
        paths=[f"{POD}.runAsUser", f"{MAIN}.runAsUser"],
    ),
    LevelCase(
        "no-seccomp-profile",
        pod_security={"seccompProfile": None},
        paths=[f"{MAIN}.seccompProfile.type"],
    ),
    LevelCase(
        "capabilities-not-dropped",
        container_security={"capabilities": {"drop": ["NET_RAW"]}},
        paths=[f"{MAIN}.capabilities.drop"],
    ),
    LevelCase(
        "baseline-capability-added",
        container_security={
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "CHOWN"]}
        },
        paths=[f"{MAIN}.capabilities.add[1]"],
    ),
    LevelCase(
        "non-restricted-volume",
        volumes=[{"name": "nfs", "nfs": {"server": "10.0.0.2", "path": "/"}}],
        paths=[f"{SPEC}.volumes[2].nfs"],
    ),
    LevelCase(
        "unhardened-init-container",
        helper={},
        paths=[
            f"{SPEC}.initContainers[0].securityContext.allowPrivilegeEscalation",
            f"{SPEC}.initContainers[0].securityContext.capabilities.drop",
        ],
    ),
]


@pytest.mark.parametrize("case", BASELINE_ONLY, ids=lambda case: case.id)
def test_restricted_field_alone_drops_the_template_to_baseline(case: LevelCase) -> None:
    template = case.template()
    assert sorted(e.path for e in level_errors(template, PodSecurityLevel.RESTRICTED)) == sorted(
        case.paths
    )
    assert level_errors(template, PodSecurityLevel.BASELINE) == []
    assert highest_level(template) is PodSecurityLevel.BASELINE


def test_container_settings_can_stand_in_for_pod_settings() -> None:
    template = hardened()
    template["spec"].pop("securityContext")
    template["spec"]["containers"][0]["securityContext"].update(
        {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    )
    assert highest_level(template) is PodSecurityLevel.RESTRICTED


def test_levels_check_pod_security_only_not_the_federations_rules() -> None:
    template = hardened()
    template["spec"]["tolerations"] = [{"operator": "Exists"}]
    template["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 1
    assert highest_level(template) is PodSecurityLevel.RESTRICTED
    assert paths(template) == sorted(
        [f"{SPEC}.tolerations", f"{SPEC}.containers[0].resources.limits[nvidia.com/gpu]"]
    )


def test_a_baseline_breach_is_an_error_at_every_level() -> None:
    template = hardened()
    template["spec"]["hostIPC"] = True
    for level in PodSecurityLevel:
        assert [e.path for e in level_errors(template, level)] == [f"{SPEC}.hostIPC"]
    assert highest_level(template) is None
