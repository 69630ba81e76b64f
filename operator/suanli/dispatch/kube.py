"""Member Nodes and Pods, as plain dicts from a watch, turned into dispatcher records.

No client and no I/O: the members' watches hand their objects (kopf bodies, ``to_dict()`` of the
Kubernetes client, parsed YAML) to :func:`node_from_k8s` and :func:`pod_from_k8s` and feed the
results to the capacity index.

What counts, following the kube-scheduler's own accounting:

- A node's model comes from its labels, vendor by vendor (:func:`~suanli.api.catalogue.
  detect_model`), and so does the resource it offers devices as: the model's resource from the
  catalogue (``huawei.com/Ascend910`` for an Ascend 910B) when the node advertises it, else the
  member's ``spec.gpuResourceName``. One member may thus mix vendors, node by node.
- A node offers ``status.allocatable[<its resource>]`` devices. It takes new pods only when its
  Ready condition is True, ``spec.unschedulable`` is not set, and it carries no NoSchedule or
  NoExecute taint of the node lifecycle (``node.kubernetes.io/...``, e.g. not-ready,
  unreachable, unschedulable). Other taints (a GPU pool's ``nvidia.com/gpu:NoSchedule``) are
  left to the workload's tolerations and do not hide the node.
- A pod holds GPUs from the moment it is bound (``spec.nodeName`` set) until it is Succeeded or
  Failed, also while it is being deleted, as the scheduler counts it. Its request is the
  scheduler's effective request: the larger of (all app containers plus restartable init
  containers, i.e. sidecars) and (the largest ordinary init container plus the sidecars started
  before it). Extended resources cannot be overcommitted, so a limit without a request counts
  as the request. A pod's devices are those of every accelerator resource the catalogue
  knows (a pod on an Ascend node asks for ``huawei.com/Ascend910``, one on a GPU node for
  ``nvidia.com/gpu``; no pod holds two kinds).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from suanli.api.catalogue import DEFAULT_CATALOGUE, Catalogue, detect_model
from suanli.api.gpu_models import MODEL_LABEL, PRODUCT_LABEL
from suanli.api.membercluster import DEFAULT_GPU_RESOURCE
from suanli.api.names import JOB_UID_LABEL
from suanli.dispatch.models import NodeInfo, PodInfo

TERMINAL_PHASES: Final = frozenset({"Succeeded", "Failed"})
_LIFECYCLE_TAINT_PREFIXES: Final = ("node.kubernetes.io/", "node.cloudprovider.kubernetes.io/")
_BLOCKING_EFFECTS: Final = frozenset({"NoSchedule", "NoExecute"})

_QUANTITY: Final = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i|[mkMGTPE])?$")
_SUFFIX: Final[dict[str, Decimal]] = {
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def parse_count(value: object) -> int:
    """A resource quantity as a whole count (``"8"``, ``8``, ``"1k"``); 0 if unreadable.

    GPUs are extended resources and always whole, but the API server prints quantities in
    canonical form, so suffixes are understood. Fractions are rounded down.
    """
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if not isinstance(value, str):
        return 0
    match = _QUANTITY.fullmatch(value.strip())
    if match is None:
        return 0
    number, suffix = match.groups()
    try:
        amount = Decimal(number)
        if suffix and suffix[0] in "eE":
            amount = amount.scaleb(int(suffix[1:]))
        elif suffix:
            amount *= _SUFFIX[suffix]
    except (InvalidOperation, ValueError):
        return 0
    return max(0, int(amount))


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: object) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else ()


def node_from_k8s(
    obj: Mapping[str, Any],
    *,
    gpu_resource: str = DEFAULT_GPU_RESOURCE,
    catalogue: Catalogue = DEFAULT_CATALOGUE,
) -> NodeInfo:
    """A Node object as a :class:`NodeInfo` (see the module notes for the rules)."""
    metadata = _mapping(obj.get("metadata"))
    spec = _mapping(obj.get("spec"))
    status = _mapping(obj.get("status"))
    labels = {str(k): str(v) for k, v in _mapping(metadata.get("labels")).items()}
    allocatable_map = _mapping(status.get("allocatable"))
    detected = detect_model(labels, catalogue)
    resource = _node_resource(
        allocatable_map, catalogue.resource_of(detected.model if detected else None, gpu_resource)
    ) or _node_resource(allocatable_map, gpu_resource)
    if resource is None:
        # No device advertised yet: count it under the resource it should offer (0 devices).
        resource = catalogue.resource_of(detected.model if detected else None, gpu_resource)
    allocatable = parse_count(allocatable_map.get(resource))
    capacity_value = _mapping(status.get("capacity")).get(resource)
    capacity = parse_count(capacity_value) if capacity_value is not None else None
    ready = any(
        _mapping(c).get("type") == "Ready" and _mapping(c).get("status") == "True"
        for c in _sequence(status.get("conditions"))
    )
    tainted = any(
        str(_mapping(t).get("key", "")).startswith(_LIFECYCLE_TAINT_PREFIXES)
        and _mapping(t).get("effect") in _BLOCKING_EFFECTS
        for t in _sequence(spec.get("taints"))
    )
    return NodeInfo(
        name=str(metadata.get("name", "")),
        model=detected.model if detected is not None else None,
        whole_gpus=detected is None or detected.whole,
        allocatable=allocatable,
        capacity=capacity,
        schedulable=ready and not spec.get("unschedulable") and not tainted,
        product=labels.get(PRODUCT_LABEL, ""),
        model_label=labels.get(MODEL_LABEL, "").strip(),
        resource=resource,
        model_by=detected.label if detected is not None else None,
    )


def _node_resource(allocatable: Mapping[str, Any], resource: str) -> str | None:
    """``resource`` if the node advertises it."""
    return resource if resource in allocatable else None


def _container_gpus(container: object, gpu_resources: frozenset[str]) -> int:
    resources = _mapping(_mapping(container).get("resources"))
    requests = _mapping(resources.get("requests"))
    limits = _mapping(resources.get("limits"))
    total = 0
    for name in gpu_resources:
        if name in requests:
            total += parse_count(requests[name])
        else:
            total += parse_count(limits.get(name))
    return total


def pod_gpus(
    spec: Mapping[str, Any], gpu_resources: frozenset[str] = frozenset({DEFAULT_GPU_RESOURCE})
) -> int:
    """The scheduler's effective request of accelerator devices (any of ``gpu_resources``)."""
    sidecars = 0
    init_peak = 0
    for container in _sequence(spec.get("initContainers")):
        gpus = _container_gpus(container, gpu_resources)
        if _mapping(container).get("restartPolicy") == "Always":
            sidecars += gpus
        else:
            init_peak = max(init_peak, sidecars + gpus)
    app = sum(_container_gpus(c, gpu_resources) for c in _sequence(spec.get("containers")))
    return max(app + sidecars, init_peak)


def pod_from_k8s(
    obj: Mapping[str, Any],
    *,
    gpu_resources: frozenset[str] = frozenset({DEFAULT_GPU_RESOURCE}),
    job_label: str = JOB_UID_LABEL,
) -> PodInfo:
    """A Pod object as a :class:`PodInfo`; ``job`` is read from ``job_label``."""
    metadata = _mapping(obj.get("metadata"))
    spec = _mapping(obj.get("spec"))
    status = _mapping(obj.get("status"))
    uid = str(metadata.get("uid") or f"{metadata.get('namespace', '')}/{metadata.get('name', '')}")
    node = spec.get("nodeName")
    job = _mapping(metadata.get("labels")).get(job_label)
    return PodInfo(
        uid=uid,
        node=str(node) if node else None,
        gpus=pod_gpus(spec, gpu_resources),
        terminal=status.get("phase") in TERMINAL_PHASES,
        job=str(job) if job else None,
    )
