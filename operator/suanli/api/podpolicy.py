"""What a ComputeJob's pod template may contain: the one policy, checked at the hub.

A ComputeJob's pod template runs on a cluster that another organisation owns, next to other
tenants' work, on accelerators that are charged by the second. The hub therefore refuses, at
``kubectl apply``, every field that would let a job escape its containers, steer itself onto
particular nodes, or hold accelerators it does not pay for. Each refusal is a
:class:`~suanli.api.validation.FieldError` naming the field by its full path from
``spec.template`` and saying what to do instead; all of them are reported at once.

Two entry points:

- :func:`template_errors`: what every job must meet, whatever member it lands on. That is the
  Pod Security Standards' ``baseline`` level, plus the federation's own rules:

  * host access beyond baseline: probes and lifecycle hooks aimed at the node's loopback
    (baseline allows ``127.0.0.1`` and ``::1``; on a member that is the member's node).
  * volumes: only the types the ``restricted`` level allows (configMap, csi, downwardAPI,
    emptyDir, ephemeral, persistentVolumeClaim, projected, secret). Baseline only forbids
    hostPath, but the other in-tree types (nfs, iscsi, rbd, cephfs, gitRepo, flexVolume, ...)
    are mounted by the member's kubelet with the node's own reach and credentials. A generic
    ephemeral volume may not name a volume, select volumes or clone a data source, and an
    inline CSI volume may not carry a node-publish Secret (which drivers a member runs inline
    is :mod:`suanli.api.template_needs`'s).
  * steering: ``nodeName``, node selectors and node-affinity terms on accelerator, suanli or
    host-identity labels, node-affinity ``matchFields``, any ``tolerations`` (the operator adds
    the one toleration the job needs), ``schedulerName``, ``runtimeClassName``, and pod
    (anti-)affinity terms that look at other namespaces (other tenants' pods).
  * queue and accounting: ``priorityClassName``, ``priority`` and ``preemptionPolicy`` (they
    would jump the member's own queue and could preempt its pods; the hub orders jobs by
    ``spec.priority``), ``overhead`` (set by the member's RuntimeClass, never by a tenant).
  * credentials: ``serviceAccountName``/``serviceAccount``, ``automountServiceAccountToken:
    true`` and projected ``serviceAccountToken`` sources: a job gets no identity on a member.
  * accelerators (:mod:`suanli.api.accelerators` holds the vendor table): any accelerator
    resource in any container's or the pod's requests and limits, dynamic resource claims,
    environment variables that make a runtime inject devices, mounts onto the NVIDIA toolkit's
    device-request directory, and ``cdi.k8s.io/`` annotations (CDI device requests).

- :func:`level_errors` and :func:`highest_level`: the template against one Pod Security
  Standards level, for members that require ``restricted`` (MemberCluster
  ``spec.podSecurityLevel``): placement skips a member whose level the template does not meet and
  names the first failing field.

Choices where the standards are silent:

- ``hostAliases``, ``dnsPolicy`` and ``dnsConfig`` are allowed: they only change the pod's own
  ``/etc/hosts`` and resolver; what the pod can reach is the member's NetworkPolicy's business,
  not DNS's.
- ``shareProcessNamespace`` and ``hostUsers: false`` (a user namespace) are allowed: they stay
  inside the pod.
- Pod (anti-)affinity within the job's own namespace and topology spread constraints are
  allowed: they arrange the gang's pods, not the node choice.
- ``restricted`` is checked without its relaxations for Windows pods and user-namespaced pods:
  GPU jobs are Linux pods, and a template that relies on a relaxation is refused on the safe side.

The levels follow the Kubernetes Pod Security Standards as of Kubernetes 1.34 (including its
rule on probe and lifecycle-hook hosts, and the sysctls added to the safe set in 1.27 and 1.29).
Every job must meet ``baseline``; a member may require ``restricted``, and a job is only placed
where its template meets the member's level. Pure: no I/O, and nothing but the template is read.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from suanli.api.accelerators import (
    is_accelerator_node_label,
    is_accelerator_resource,
    is_device_env,
)
from suanli.api.validation import FieldError, PathPart, join_path


class PodSecurityLevel(StrEnum):
    """A Pod Security Standards level a member enforces; ordered from least to most strict."""

    BASELINE = "baseline"
    RESTRICTED = "restricted"

    @property
    def strictness(self) -> int:
        return _STRICTNESS[self]


_STRICTNESS: Final = {PodSecurityLevel.BASELINE: 1, PodSecurityLevel.RESTRICTED: 2}

DEFAULT_POD_SECURITY_LEVEL: Final = PodSecurityLevel.BASELINE

# --- what the levels allow ----------------------------------------------------------------------

CONTAINER_KINDS: Final = ("containers", "initContainers", "ephemeralContainers")

# Capabilities a container runtime grants by default anyway; baseline lets a container ask for
# them explicitly, and nothing else.
BASELINE_CAPABILITIES: Final = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
RESTRICTED_CAPABILITIES: Final = frozenset({"NET_BIND_SERVICE"})

# Sysctls that are namespaced per pod and cannot affect other pods on the node.
SAFE_SYSCTLS: Final = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)

# SELinux types a container runtime uses for ordinary containers; "" means the runtime's default.
SELINUX_TYPES: Final = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)

# Volume types the restricted level allows; all are backed by the API or by a PersistentVolume
# the member's admin set up, none by a path or server the tenant names.
RESTRICTED_VOLUME_TYPES: Final = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)

APPARMOR_ANNOTATION_PREFIX: Final = "container.apparmor.security.beta.kubernetes.io/"
APPARMOR_TYPES: Final = frozenset({"RuntimeDefault", "Localhost"})
SECCOMP_POD_ANNOTATION: Final = "seccomp.security.alpha.kubernetes.io/pod"
SECCOMP_CONTAINER_ANNOTATION_PREFIX: Final = "container.seccomp.security.alpha.kubernetes.io/"
SECCOMP_CONFINED_TYPES: Final = frozenset({"RuntimeDefault", "Localhost"})

# Containerd and CRI-O inject the CDI devices such annotations name, bypassing the device plugin.
CDI_ANNOTATION_PREFIX: Final = "cdi.k8s.io/"
# With the toolkit's volume-mounts strategy, a mount under this directory is a device request:
# an emptyDir mounted at .../all would get every GPU on the node.
NVIDIA_DEVICE_REQUEST_DIRS: Final = (
    "/var/run/nvidia-container-devices",
    "/run/nvidia-container-devices",
)

# Node labels besides the vendors' that would pin a job to particular nodes: ours, the node's
# own identity (nodeName by another name), cloud instance types (which fix the GPU model), and
# node feature discovery's PCI device labels (which name accelerators by PCI vendor id).
STEERING_LABEL_PREFIXES: Final = (
    "suanli.io/",
    "kubernetes.io/hostname",
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
    "feature.node.kubernetes.io/pci-",
    "cloud.google.com/gke-accelerator",
)

# --- the template, as the checks see it ---------------------------------------------------------

Path = tuple[PathPart, ...]

TEMPLATE_PATH: Final[Path] = ("spec", "template")
METADATA_PATH: Final[Path] = (*TEMPLATE_PATH, "metadata")
SPEC_PATH: Final[Path] = (*TEMPLATE_PATH, "spec")


@dataclass(frozen=True)
class _Container:
    path: Path
    body: Mapping[str, Any]

    @property
    def security(self) -> Mapping[str, Any]:
        return _obj(self.body.get("securityContext"))

    @property
    def security_path(self) -> Path:
        return (*self.path, "securityContext")


@dataclass(frozen=True)
class _Pod:
    annotations: Mapping[str, Any]
    spec: Mapping[str, Any]
    containers: tuple[_Container, ...]

    @property
    def security(self) -> Mapping[str, Any]:
        return _obj(self.spec.get("securityContext"))

    def security_contexts(self) -> Iterator[tuple[Path, Mapping[str, Any]]]:
        """The pod's security context, then each container's, with their paths."""
        yield (*SPEC_PATH, "securityContext"), self.security
        for container in self.containers:
            yield container.security_path, container.security


def _obj(value: object) -> Mapping[str, Any]:
    """``value`` if it is an object, else empty: shape errors are reported elsewhere."""
    return value if isinstance(value, Mapping) else {}


def _items(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _is_set(value: object) -> bool:
    """Whether a field asks for something: empty lists, objects and strings ask for nothing."""
    return value is not None and value not in ([], {}, "")


def _pod(template: Mapping[str, Any]) -> _Pod:
    spec = _obj(template.get("spec"))
    containers = tuple(
        _Container((*SPEC_PATH, kind, index), _obj(body))
        for kind in CONTAINER_KINDS
        for index, body in enumerate(_items(spec.get(kind)))
    )
    annotations = _obj(_obj(template.get("metadata")).get("annotations"))
    return _Pod(annotations, spec, containers)


def _error(path: Sequence[PathPart], message: str) -> FieldError:
    return FieldError(join_path(path), message)


Check = Callable[[_Pod], Iterator[FieldError]]

# --- baseline -----------------------------------------------------------------------------------


def _host_namespaces(pod: _Pod) -> Iterator[FieldError]:
    for field, what in (("hostNetwork", "network"), ("hostPID", "process"), ("hostIPC", "IPC")):
        if pod.spec.get(field) not in (None, False):
            yield _error(
                (*SPEC_PATH, field),
                f"would share the node's {what} namespace with the job; remove it (or set it to "
                "false): pods on a member run in their own namespaces",
            )


def _privileged(pod: _Pod) -> Iterator[FieldError]:
    for container in pod.containers:
        if container.security.get("privileged") not in (None, False):
            yield _error(
                (*container.security_path, "privileged"),
                "a privileged container has the node's devices and kernel at hand; remove it "
                "(or set it to false)",
            )


def _host_process(pod: _Pod) -> Iterator[FieldError]:
    for path, context in pod.security_contexts():
        if _obj(context.get("windowsOptions")).get("hostProcess") not in (None, False):
            yield _error(
                (*path, "windowsOptions", "hostProcess"),
                "a Windows HostProcess container runs as a process on the node; remove it",
            )


def _added_capabilities(
    container: _Container,
) -> Iterator[tuple[Path, object]]:
    capabilities = _obj(container.security.get("capabilities"))
    for index, name in enumerate(_items(capabilities.get("add"))):
        yield (*container.security_path, "capabilities", "add", index), name


def _baseline_capabilities(pod: _Pod) -> Iterator[FieldError]:
    for container in pod.containers:
        for path, name in _added_capabilities(container):
            if name not in BASELINE_CAPABILITIES:
                yield _error(
                    path,
                    f"capability {name!r} is beyond the runtime's default set; remove it (only "
                    f"{', '.join(sorted(BASELINE_CAPABILITIES))} may be listed)",
                )


def _host_path_volumes(pod: _Pod) -> Iterator[FieldError]:
    for index, volume in enumerate(_items(pod.spec.get("volumes"))):
        if "hostPath" in _obj(volume):
            yield _error(
                (*SPEC_PATH, "volumes", index, "hostPath"),
                "would mount a directory of the node into the job; use an emptyDir, configMap, "
                "secret or persistentVolumeClaim volume instead",
            )


def _host_ports(pod: _Pod) -> Iterator[FieldError]:
    for container in pod.containers:
        for index, port in enumerate(_items(container.body.get("ports"))):
            if _obj(port).get("hostPort") not in (None, 0):
                yield _error(
                    (*container.path, "ports", index, "hostPort"),
                    "would bind a port on the node itself; remove hostPort (containerPort alone "
                    "is reachable from the job's other pods)",
                )


def _apparmor(pod: _Pod) -> Iterator[FieldError]:
    for key, value in pod.annotations.items():
        if str(key).startswith(APPARMOR_ANNOTATION_PREFIX) and not (
            value in (None, "", "runtime/default") or str(value).startswith("localhost/")
        ):
            yield _error(
                (*METADATA_PATH, "annotations", str(key)),
                f"AppArmor profile {value!r} would weaken the runtime's default confinement; use "
                "runtime/default or a localhost/ profile, or remove the annotation",
            )
    for path, context in pod.security_contexts():
        kind = _obj(context.get("appArmorProfile")).get("type")
        if kind is not None and kind not in APPARMOR_TYPES:
            yield _error(
                (*path, "appArmorProfile", "type"),
                f"AppArmor profile type {kind!r} would weaken the runtime's default confinement; "
                "use RuntimeDefault or Localhost, or remove it",
            )


def _selinux(pod: _Pod) -> Iterator[FieldError]:
    for path, context in pod.security_contexts():
        options = _obj(context.get("seLinuxOptions"))
        kind = options.get("type")
        if kind is not None and kind not in SELINUX_TYPES:
            yield _error(
                (*path, "seLinuxOptions", "type"),
                f"SELinux type {kind!r} is not one of the container types; remove it or use "
                f"{', '.join(sorted(t for t in SELINUX_TYPES if t))}",
            )
        for field in ("user", "role"):
            if options.get(field) not in (None, ""):
                yield _error(
                    (*path, "seLinuxOptions", field),
                    f"a custom SELinux {field} could lift the container's confinement; remove it",
                )


def _proc_mount(pod: _Pod) -> Iterator[FieldError]:
    for container in pod.containers:
        if container.security.get("procMount") not in (None, "Default"):
            yield _error(
                (*container.security_path, "procMount"),
                "an unmasked /proc exposes the node's kernel interfaces; remove procMount (or set "
                "it to Default)",
            )


def _seccomp_unconfined(pod: _Pod) -> Iterator[FieldError]:
    for path, context in pod.security_contexts():
        if _obj(context.get("seccompProfile")).get("type") == "Unconfined":
            yield _error(
                (*path, "seccompProfile", "type"),
                "Unconfined turns off system-call filtering; use RuntimeDefault or Localhost",
            )
    for key, value in pod.annotations.items():
        is_seccomp = key == SECCOMP_POD_ANNOTATION or str(key).startswith(
            SECCOMP_CONTAINER_ANNOTATION_PREFIX
        )
        if is_seccomp and value == "unconfined":
            yield _error(
                (*METADATA_PATH, "annotations", str(key)),
                "unconfined turns off system-call filtering; remove the annotation and set "
                "securityContext.seccompProfile.type to RuntimeDefault",
            )


def _sysctls(pod: _Pod) -> Iterator[FieldError]:
    for index, sysctl in enumerate(_items(pod.security.get("sysctls"))):
        name = _obj(sysctl).get("name")
        if name not in SAFE_SYSCTLS:
            yield _error(
                (*SPEC_PATH, "securityContext", "sysctls", index, "name"),
                f"sysctl {name!r} is not namespaced to the pod and could affect the whole node; "
                f"remove it (allowed: {', '.join(sorted(SAFE_SYSCTLS))})",
            )


_PROBES: Final = ("livenessProbe", "readinessProbe", "startupProbe")
_HOOKS: Final = ("postStart", "preStop")
# Baseline allows the node's loopback for probes (host-networked control planes use it).
LOOPBACK_PROBE_HOSTS: Final = frozenset({"127.0.0.1", "::1"})


def _probe_hosts(pod: _Pod) -> Iterator[tuple[Path, object]]:
    """Each ``host`` set on a probe's or lifecycle hook's httpGet or tcpSocket, with its path."""
    for container in pod.containers:
        handlers: list[tuple[Path, Mapping[str, Any]]] = [
            ((*container.path, probe), _obj(container.body.get(probe))) for probe in _PROBES
        ]
        lifecycle = _obj(container.body.get("lifecycle"))
        handlers += [
            ((*container.path, "lifecycle", hook), _obj(lifecycle.get(hook))) for hook in _HOOKS
        ]
        for path, handler in handlers:
            for action in ("httpGet", "tcpSocket"):
                host = _obj(handler.get(action)).get("host")
                if host not in (None, ""):
                    yield (*path, action, "host"), host


_PROBE_HOST_MESSAGE: Final = (
    "the kubelet would connect from the node to this host; remove host so that the probe or "
    "hook reaches the pod itself"
)


def _remote_probe_hosts(pod: _Pod) -> Iterator[FieldError]:
    for path, host in _probe_hosts(pod):
        if host not in LOOPBACK_PROBE_HOSTS:
            yield _error(path, _PROBE_HOST_MESSAGE)


BASELINE_CHECKS: Final[tuple[Check, ...]] = (
    _host_process,
    _host_namespaces,
    _privileged,
    _baseline_capabilities,
    _host_path_volumes,
    _host_ports,
    _remote_probe_hosts,
    _apparmor,
    _selinux,
    _proc_mount,
    _seccomp_unconfined,
    _sysctls,
)

# --- restricted ---------------------------------------------------------------------------------


def _volume_types(pod: _Pod) -> Iterator[FieldError]:
    for index, volume in enumerate(_items(pod.spec.get("volumes"))):
        for kind in _obj(volume):
            # hostPath has its own, baseline, error.
            if kind not in RESTRICTED_VOLUME_TYPES and kind not in ("name", "hostPath"):
                yield _error(
                    (*SPEC_PATH, "volumes", index, kind),
                    f"{kind} volumes are mounted by the member's node with its own access; use "
                    f"one of {', '.join(sorted(RESTRICTED_VOLUME_TYPES))}",
                )


def _privilege_escalation(pod: _Pod) -> Iterator[FieldError]:
    for container in pod.containers:
        if container.security.get("allowPrivilegeEscalation") is not False:
            yield _error(
                (*container.security_path, "allowPrivilegeEscalation"),
                "must be false: set securityContext.allowPrivilegeEscalation: false so that "
                "setuid binaries cannot gain privileges",
            )


def _run_as_non_root(pod: _Pod) -> Iterator[FieldError]:
    pod_value = pod.security.get("runAsNonRoot")
    if pod_value not in (None, True):
        yield _error(
            (*SPEC_PATH, "securityContext", "runAsNonRoot"),
            "must be true (or unset, with every container setting it to true): the job's "
            "containers must not run as root",
        )
    for container in pod.containers:
        value = container.security.get("runAsNonRoot")
        # A container that inherits a wrong pod value was reported with the pod.
        inherits = value is None and pod_value is not None
        if value is True or inherits:
            continue
        yield _error(
            (*container.security_path, "runAsNonRoot"),
            "must be true, here or in spec.securityContext: the container must not run as root",
        )


def _run_as_user(pod: _Pod) -> Iterator[FieldError]:
    for path, context in pod.security_contexts():
        if context.get("runAsUser") == 0:
            yield _error(
                (*path, "runAsUser"),
                "0 is root; use a non-zero user id, or leave it to the image's non-root USER",
            )


def _seccomp_required(pod: _Pod) -> Iterator[FieldError]:
    pod_type = _obj(pod.security.get("seccompProfile")).get("type")
    for container in pod.containers:
        kind = _obj(container.security.get("seccompProfile")).get("type")
        # Unconfined has its baseline error; here only a profile that is missing everywhere.
        if kind is None and pod_type not in SECCOMP_CONFINED_TYPES:
            yield _error(
                (*container.security_path, "seccompProfile", "type"),
                "a seccomp profile is required: set seccompProfile.type to RuntimeDefault here or "
                "in spec.securityContext",
            )


def _restricted_capabilities(pod: _Pod) -> Iterator[FieldError]:
    for container in pod.containers:
        capabilities = _obj(container.security.get("capabilities"))
        if "ALL" not in _items(capabilities.get("drop")):
            yield _error(
                (*container.security_path, "capabilities", "drop"),
                'must include "ALL": drop every capability, then add back NET_BIND_SERVICE if '
                "the container needs it",
            )
        for path, name in _added_capabilities(container):
            # Names beyond baseline's set have their baseline error.
            if name in BASELINE_CAPABILITIES and name not in RESTRICTED_CAPABILITIES:
                yield _error(
                    path, f"capability {name!r} is not allowed; only NET_BIND_SERVICE may be added"
                )


RESTRICTED_CHECKS: Final[tuple[Check, ...]] = (
    _volume_types,
    _privilege_escalation,
    _run_as_non_root,
    _run_as_user,
    _seccomp_required,
    _restricted_capabilities,
)

# --- the federation's own rules -----------------------------------------------------------------


def _is_steering_label(key: object) -> bool:
    text = str(key)
    return is_accelerator_node_label(text) or text.startswith(STEERING_LABEL_PREFIXES)


_REQUIRED: Final = "requiredDuringSchedulingIgnoredDuringExecution"
_PREFERRED: Final = "preferredDuringSchedulingIgnoredDuringExecution"

_STEERING_MESSAGE: Final = (
    "would steer the job onto particular nodes; remove it: the operator chooses the member and "
    "the GPU model from spec.gpuModels, and the member's scheduler chooses the node"
)


def _node_selection(pod: _Pod) -> Iterator[FieldError]:
    if _is_set(pod.spec.get("nodeName")):
        yield _error((*SPEC_PATH, "nodeName"), _STEERING_MESSAGE)
    for key in _obj(pod.spec.get("nodeSelector")):
        if _is_steering_label(key):
            yield _error((*SPEC_PATH, "nodeSelector", str(key)), _STEERING_MESSAGE)
    node_affinity_path = (*SPEC_PATH, "affinity", "nodeAffinity")
    node_affinity = _obj(_obj(pod.spec.get("affinity")).get("nodeAffinity"))
    terms: list[tuple[Path, Mapping[str, Any]]] = [
        ((*node_affinity_path, _REQUIRED, "nodeSelectorTerms", index), _obj(term))
        for index, term in enumerate(
            _items(_obj(node_affinity.get(_REQUIRED)).get("nodeSelectorTerms"))
        )
    ]
    terms += [
        (
            (*node_affinity_path, _PREFERRED, index, "preference"),
            _obj(_obj(entry).get("preference")),
        )
        for index, entry in enumerate(_items(node_affinity.get(_PREFERRED)))
    ]
    for path, term in terms:
        for index, expression in enumerate(_items(term.get("matchExpressions"))):
            if _is_steering_label(_obj(expression).get("key")):
                yield _error((*path, "matchExpressions", index, "key"), _STEERING_MESSAGE)
        # matchFields can only select metadata.name: nodeName by another name.
        for index, _ in enumerate(_items(term.get("matchFields"))):
            yield _error((*path, "matchFields", index), _STEERING_MESSAGE)


def _pod_affinity_namespaces(pod: _Pod) -> Iterator[FieldError]:
    affinity = _obj(pod.spec.get("affinity"))
    for kind in ("podAffinity", "podAntiAffinity"):
        rules = _obj(affinity.get(kind))
        base = (*SPEC_PATH, "affinity", kind)
        terms: list[tuple[Path, Mapping[str, Any]]] = [
            ((*base, _REQUIRED, index), _obj(term))
            for index, term in enumerate(_items(rules.get(_REQUIRED)))
        ]
        terms += [
            (
                (*base, _PREFERRED, index, "podAffinityTerm"),
                _obj(_obj(entry).get("podAffinityTerm")),
            )
            for index, entry in enumerate(_items(rules.get(_PREFERRED)))
        ]
        for path, term in terms:
            # An empty namespaceSelector selects every namespace; an empty list, none.
            looks_elsewhere = {
                "namespaces": _is_set(term.get("namespaces")),
                "namespaceSelector": term.get("namespaceSelector") is not None,
            }
            for field, elsewhere in looks_elsewhere.items():
                if elsewhere:
                    yield _error(
                        (*path, field),
                        "would place the job by other tenants' pods; remove it: pod affinity "
                        "may only look at the job's own pods",
                    )


_QUEUE_JUMP: Final = (
    "would jump the member's queue and could preempt its pods; remove it and use spec.priority, "
    "which orders the job in the hub's queue"
)
# Pod-spec fields that are the operator's or the member's to set, and why.
SCHEDULING_REFUSALS: Final[Mapping[str, str]] = {
    "tolerations": "the operator adds the one toleration the job needs (its GPU taint); "
    "remove tolerations: others would let the job onto nodes the member keeps for itself",
    "schedulerName": "the member's own scheduler places the job; remove it",
    "runtimeClassName": "the member chooses the container runtime; remove it",
    "priorityClassName": _QUEUE_JUMP,
    "priority": _QUEUE_JUMP,
    "preemptionPolicy": "preemption on a member is the member's decision; remove it",
    "overhead": "pod overhead is set by the member's RuntimeClass; remove it",
}


def _scheduling(pod: _Pod) -> Iterator[FieldError]:
    for field, message in SCHEDULING_REFUSALS.items():
        if _is_set(pod.spec.get(field)):
            yield _error((*SPEC_PATH, field), message)


def _credentials(pod: _Pod) -> Iterator[FieldError]:
    for field in ("serviceAccountName", "serviceAccount"):
        if _is_set(pod.spec.get(field)):
            yield _error(
                (*SPEC_PATH, field),
                "a job has no service account on a member cluster; remove it",
            )
    if pod.spec.get("automountServiceAccountToken") not in (None, False):
        yield _error(
            (*SPEC_PATH, "automountServiceAccountToken"),
            "a job gets no API credentials on a member cluster; remove it (or set it to false)",
        )
    for index, volume in enumerate(_items(pod.spec.get("volumes"))):
        projected = _obj(_obj(volume).get("projected"))
        for source_index, source in enumerate(_items(projected.get("sources"))):
            if "serviceAccountToken" in _obj(source):
                yield _error(
                    (
                        *SPEC_PATH,
                        "volumes",
                        index,
                        "projected",
                        "sources",
                        source_index,
                        "serviceAccountToken",
                    ),
                    "a job gets no service-account token on a member cluster; remove this source",
                )


_ACCELERATOR_MESSAGE: Final = (
    "accelerators are added by the operator from spec.gpusPerReplica, under the member's "
    "resource name, and charged to the voucher; remove this entry"
)


def _resource_errors(path: Path, resources: Mapping[str, Any]) -> Iterator[FieldError]:
    for section in ("limits", "requests"):
        for name in _obj(resources.get(section)):
            if is_accelerator_resource(str(name)):
                yield _error((*path, section, str(name)), _ACCELERATOR_MESSAGE)


def _accelerator_resources(pod: _Pod) -> Iterator[FieldError]:
    # Pod-level resources (Kubernetes 1.32+) are requests too.
    yield from _resource_errors((*SPEC_PATH, "resources"), _obj(pod.spec.get("resources")))
    for container in pod.containers:
        resources = _obj(container.body.get("resources"))
        yield from _resource_errors((*container.path, "resources"), resources)
        if _is_set(resources.get("claims")):
            yield _error(
                (*container.path, "resources", "claims"),
                "dynamic resource claims could allocate devices the job does not pay for; remove "
                "them",
            )
    if _is_set(pod.spec.get("resourceClaims")):
        yield _error(
            (*SPEC_PATH, "resourceClaims"),
            "dynamic resource claims could allocate devices the job does not pay for; remove them",
        )


def _device_requests(pod: _Pod) -> Iterator[FieldError]:
    for key in pod.annotations:
        if str(key).startswith(CDI_ANNOTATION_PREFIX):
            yield _error(
                (*METADATA_PATH, "annotations", str(key)),
                "a CDI annotation asks the container runtime for devices directly; remove it",
            )
    for container in pod.containers:
        for index, variable in enumerate(_items(container.body.get("env"))):
            name = _obj(variable).get("name")
            if isinstance(name, str) and is_device_env(name):
                yield _error(
                    (*container.path, "env", index, "name"),
                    f"{name} makes the node's container runtime or device plugin hand out "
                    "accelerators or lift their limits; remove it: the job's accelerators come "
                    "from spec.gpusPerReplica",
                )
        for index, mount in enumerate(_items(container.body.get("volumeMounts"))):
            # Normalised as the runtime will see it: "//x", "/a/../x" and "x" all mean "/x".
            raw = str(_obj(mount).get("mountPath") or "")
            mount_path = "/" + posixpath.normpath(f"/{raw}").lstrip("/")
            if any(
                mount_path == directory or mount_path.startswith(f"{directory}/")
                for directory in NVIDIA_DEVICE_REQUEST_DIRS
            ):
                yield _error(
                    (*container.path, "volumeMounts", index, "mountPath"),
                    "a mount here is read as a GPU request by the NVIDIA container toolkit; "
                    "mount the volume elsewhere",
                )


# A generic ephemeral volume is a claim the member's default provisioner makes for the pod's
# life; these fields would bind it to storage that exists already (another tenant's volume, a
# snapshot or clone of one) instead.
EPHEMERAL_CLAIM_REFUSALS: Final[Mapping[str, str]] = {
    "volumeName": "would bind the claim to an existing PersistentVolume",
    "selector": "would bind the claim to existing PersistentVolumes by label",
    "dataSource": "would fill the volume from an existing claim or snapshot",
    "dataSourceRef": "would fill the volume from an existing claim, snapshot or populator",
}


def _storage_reach(pod: _Pod) -> Iterator[FieldError]:
    for index, raw in enumerate(_items(pod.spec.get("volumes"))):
        volume = _obj(raw)
        claim = _obj(_obj(_obj(volume.get("ephemeral")).get("volumeClaimTemplate")).get("spec"))
        for field, why in EPHEMERAL_CLAIM_REFUSALS.items():
            if _is_set(claim.get(field)):
                yield _error(
                    (
                        *SPEC_PATH,
                        "volumes",
                        index,
                        "ephemeral",
                        "volumeClaimTemplate",
                        "spec",
                        field,
                    ),
                    f"{why}; remove it: an ephemeral volume is new, empty storage for the pod's "
                    "life",
                )
        if _is_set(_obj(volume.get("csi")).get("nodePublishSecretRef")):
            yield _error(
                (*SPEC_PATH, "volumes", index, "csi", "nodePublishSecretRef"),
                "would hand a Secret to the member's CSI driver on the node; remove it: inline "
                "CSI volumes run without credentials",
            )


def _loopback_probe_hosts(pod: _Pod) -> Iterator[FieldError]:
    # Baseline allows these, but on a member the node's loopback is the member's, not the job's.
    for path, host in _probe_hosts(pod):
        if host in LOOPBACK_PROBE_HOSTS:
            yield _error(path, _PROBE_HOST_MESSAGE)


HUB_CHECKS: Final[tuple[Check, ...]] = (
    *BASELINE_CHECKS,
    _loopback_probe_hosts,
    _volume_types,
    _node_selection,
    _pod_affinity_namespaces,
    _scheduling,
    _credentials,
    _accelerator_resources,
    _device_requests,
    _storage_reach,
)

_LEVEL_CHECKS: Final[Mapping[PodSecurityLevel, tuple[Check, ...]]] = {
    PodSecurityLevel.BASELINE: BASELINE_CHECKS,
    PodSecurityLevel.RESTRICTED: (*BASELINE_CHECKS, *RESTRICTED_CHECKS),
}

# --- entry points -------------------------------------------------------------------------------


def _run(template: Mapping[str, Any], checks: Sequence[Check]) -> list[FieldError]:
    pod = _pod(template)
    return [error for check in checks for error in check(pod)]


def template_errors(template: Mapping[str, Any]) -> list[FieldError]:
    """Everything refused in every ComputeJob's pod template, one error per offending field.

    Args:
        template: the ComputeJob's ``spec.template`` (a PodTemplateSpec as a plain mapping).
            Fields of the wrong shape are skipped here; the ComputeJob's own validation reports
            them.
    """
    return _run(template, HUB_CHECKS)


def level_errors(template: Mapping[str, Any], level: PodSecurityLevel) -> list[FieldError]:
    """Where the pod template falls short of one Pod Security Standards level.

    Only the level's rules are checked, not the federation's own (see
    :func:`template_errors`); an empty list means the template meets ``level``.
    """
    return _run(template, _LEVEL_CHECKS[level])


def highest_level(template: Mapping[str, Any]) -> PodSecurityLevel | None:
    """The strictest level the template meets; ``None`` when it does not meet even baseline."""
    met: PodSecurityLevel | None = None
    for level in sorted(PodSecurityLevel, key=lambda each: each.strictness):
        if level_errors(template, level):
            break
        met = level
    return met
