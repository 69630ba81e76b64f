"""Pure builders for the objects a local federation needs: GPU nodes and kwok Stages.

NVIDIA nodes carry ``nvidia.com/gpu`` capacity and the labels GPU feature discovery sets on real
GPU nodes (product, count, memory); Ascend nodes carry ``huawei.com/Ascend910`` and the labels
Ascend Device Plugin sets (``accelerator``, ``node.kubernetes.io/npu.chip.name``), so placement
code reads them exactly as it would in a real computing center.

kwok moves pods through their lifecycle with Stages. A configuration that names any Stage replaces
all of kwok's defaults, the node ones included, so the full set is written here:

- nodes become Ready at once and heartbeat (kwok renews their leases itself);
- a scheduled pod becomes Running at once;
- a Running pod with the ``suanli.io/run-duration`` annotation (a Go duration such as ``30s``, or
  an RFC 3339 time to finish at) Succeeds once that time has passed;
- a Running pod owned by a Job, without the annotation, Succeeds at once;
- a pod being deleted goes away at once (there is no kubelet to wait for).
"""

from __future__ import annotations

from typing import Any, Final

from suanli.devenv.topology import ClusterSpec, NodePool, node_name

RUN_DURATION_ANNOTATION: Final = "suanli.io/run-duration"
GPU_RESOURCE: Final = "nvidia.com/gpu"
ASCEND_RESOURCE: Final = "huawei.com/Ascend910"
MANAGED_BY_LABEL: Final = "suanli.io/dev-federation"

Manifest = dict[str, Any]


def gpu_nodes(cluster: ClusterSpec) -> list[Manifest]:
    """One Node object per simulated machine of the cluster, status included."""
    nodes: list[Manifest] = []
    for pool in cluster.node_pools:
        for index in range(pool.count):
            name = node_name(cluster, pool, index)
            resources = {
                "cpu": "128",
                "memory": "1Ti",
                "pods": "110",
                "ephemeral-storage": "10Ti",
                ASCEND_RESOURCE if pool.gpu.ascend else GPU_RESOURCE: str(pool.gpus_per_node),
            }
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "labels": {
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "node.kubernetes.io/instance-type": f"gpu-{pool.name}",
                            "topology.kubernetes.io/region": cluster.region,
                            "type": "kwok",
                            MANAGED_BY_LABEL: cluster.name,
                            **_accelerator_labels(pool),
                        },
                        "annotations": {"kwok.x-k8s.io/node": "fake"},
                    },
                    "spec": {},
                    "status": {"capacity": resources, "allocatable": dict(resources)},
                }
            )
    return nodes


def _accelerator_labels(pool: NodePool) -> dict[str, str]:
    if pool.gpu.ascend:
        # As Ascend Device Plugin labels an NPU node (MindCluster's node label table).
        return {
            "accelerator": "huawei-Ascend910",
            "node.kubernetes.io/npu.chip.name": pool.gpu.ascend_chip,
        }
    # As NVIDIA GPU feature discovery labels a GPU node.
    return {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": pool.gpu.product,
        "nvidia.com/gpu.count": str(pool.gpus_per_node),
        "nvidia.com/gpu.memory": str(pool.gpu.memory_mib),
    }


def _match(key: str, operator: str, *values: str) -> dict[str, Any]:
    expression: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        expression["values"] = list(values)
    return expression


def _stage(
    name: str,
    kind: str,
    selector: list[dict[str, Any]],
    next_step: dict[str, Any],
    delay: dict[str, Any] | None = None,
) -> Manifest:
    spec: dict[str, Any] = {
        "resourceRef": {"apiGroup": "v1", "kind": kind},
        "selector": {"matchExpressions": selector},
        "next": next_step,
    }
    if delay is not None:
        spec["delay"] = delay
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": spec,
    }


_NODE_STATUS: Final = """\
{{ $now := Now }}
conditions:
{{ range NodeConditions }}
- lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $now | Quote }}
  message: {{ .message | Quote }}
  reason: {{ .reason | Quote }}
  status: {{ .status | Quote }}
  type: {{ .type | Quote }}
{{ end }}
addresses:
{{ with NodeIP }}
- address: {{ . | Quote }}
  type: InternalIP
{{ end }}
- address: {{ .metadata.name | Quote }}
  type: Hostname
allocatable:
{{ YAML .status.allocatable 1 }}
capacity:
{{ YAML .status.capacity 1 }}
nodeInfo:
  architecture: amd64
  operatingSystem: linux
  kubeletVersion: {{ printf "kwok-%s" Version | Quote }}
  kubeProxyVersion: {{ printf "kwok-%s" Version | Quote }}
  containerRuntimeVersion: {{ printf "kwok-%s" Version | Quote }}
  kernelVersion: {{ printf "kwok-%s" Version | Quote }}
phase: Running
"""

_POD_RUNNING: Final = """\
{{ $now := Now }}
conditions:
- type: Initialized
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
- type: ContainersReady
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
- type: Ready
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  ready: true
  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
{{ with NodeIPWith .spec.nodeName }}
hostIP: {{ . | Quote }}
{{ end }}
{{ with PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" )
  ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
podIP: {{ . | Quote }}
{{ end }}
phase: Running
startTime: {{ $now | Quote }}
"""

_POD_SUCCEEDED: Final = """\
{{ $now := Now }}
{{ $pod := . }}
conditions:
- type: Ready
  status: "False"
  reason: PodCompleted
  lastTransitionTime: {{ $now | Quote }}
- type: ContainersReady
  status: "False"
  reason: PodCompleted
  lastTransitionTime: {{ $now | Quote }}
containerStatuses:
{{ range $index, $container := .spec.containers }}
- name: {{ $container.name | Quote }}
  image: {{ $container.image | Quote }}
  ready: false
  started: false
  restartCount: 0
  state:
    terminated:
      exitCode: 0
      reason: Completed
      startedAt: {{ or $pod.status.startTime $now | Quote }}
      finishedAt: {{ $now | Quote }}
{{ end }}
phase: Succeeded
"""


def kwok_stages() -> list[Manifest]:
    """The complete Stage set for kwok (see the module docstring for the behaviour)."""
    not_deleting = _match(".metadata.deletionTimestamp", "DoesNotExist")
    running = _match(".status.phase", "In", "Running")
    run_duration = f'.metadata.annotations["{RUN_DURATION_ANNOTATION}"]'
    ready = '.status.conditions.[] | select( .type == "Ready" ) | .status'
    return [
        _stage(
            "node-initialize",
            "Node",
            [_match(ready, "NotIn", "True")],
            {"statusTemplate": _NODE_STATUS},
        ),
        _stage(
            "node-heartbeat",
            "Node",
            [
                _match(".status.phase", "In", "Running"),
                _match(ready, "In", "True"),
            ],
            {"statusTemplate": _NODE_STATUS},
            # Leases carry liveness; conditions only need refreshing now and then.
            delay={"durationMilliseconds": 60_000, "jitterDurationMilliseconds": 65_000},
        ),
        _stage(
            "pod-running",
            "Pod",
            [
                not_deleting,
                _match(".status.phase", "In", "Pending"),
                _match(".spec.nodeName", "Exists"),
            ],
            {"statusTemplate": _POD_RUNNING},
        ),
        _stage(
            "pod-complete-after-run-duration",
            "Pod",
            [not_deleting, running, _match(run_duration, "Exists")],
            {"statusTemplate": _POD_SUCCEEDED},
            delay={"durationMilliseconds": 0, "durationFrom": {"expressionFrom": run_duration}},
        ),
        _stage(
            "pod-complete-job",
            "Pod",
            [
                not_deleting,
                running,
                _match(run_duration, "DoesNotExist"),
                _match(".metadata.ownerReferences.[].kind", "In", "Job"),
            ],
            {"statusTemplate": _POD_SUCCEEDED},
        ),
        _stage(
            "pod-delete",
            "Pod",
            [_match(".metadata.deletionTimestamp", "Exists")],
            {"delete": True},
        ),
    ]
