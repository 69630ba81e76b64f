"""The workload a ComputeJob becomes on a member cluster: a batch/v1 Job, built by pure functions.

Names are deterministic (derived from the ComputeJob's namespace, name and uid), so creating the
workload again after a crash finds the first copy (AlreadyExists) instead of making a second one.
Labels lead back to the ComputeJob, so the member's watch can tell which job a pod belongs to.

The member enforces the hub's rules a second time, so that a bug at the hub alone cannot give a
tenant more than its pod may have:

- every namespace suanli creates carries the Pod Security admission labels of the member's level
  (``enforce``, ``warn`` and ``audit``, each pinned to :data:`POD_SECURITY_VERSION`), so the
  member's own API server refuses a pod below that level whoever creates it;
- remote pods get no ServiceAccount token and no Service environment variables: a tenant's job
  has no business with the member's API server or its Services;
- Secrets and ConfigMaps the template names are job-scoped copies (:mod:`.copies`), and a gang
  finds its peers through a headless Service (:mod:`.rendezvous`);
- the pods are pinned to the nodes of the chosen GPU model by the very labels the dispatcher
  read that model from (see :class:`ModelPin`), so the member's scheduler cannot put them on
  GPUs of another price.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from suanli.api.computejob import ComputeJob
from suanli.api.gpu_models import MODEL_LABEL, PRODUCT_LABEL
from suanli.api.names import HUB_ANNOTATION, JOB_NAME_LABEL, JOB_NAMESPACE_LABEL, JOB_UID_LABEL
from suanli.api.podpolicy import PodSecurityLevel
from suanli.api.references import rename_references
from suanli.api.termination import DEFAULT_TERMINATION_GRACE_SECONDS, bound_graces, pod_lifetime
from suanli.members.rendezvous import (
    add_launcher_env,
    headless_service,
    launcher_env,
    service_name,
)

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "suanli"

_MAX_NAME: Final = 63
_MAX_OBJECT_NAME: Final = 253
_MAX_JOB_NAME: Final = 56
"""An Indexed Job's pods are named ``<job>-<index>`` as hosts (a DNS label of at most 63): the
Job's name leaves room for a dash and an index of up to six digits."""

POD_SECURITY_LABEL_PREFIX: Final = "pod-security.kubernetes.io/"
POD_SECURITY_MODES: Final = ("enforce", "warn", "audit")
POD_SECURITY_VERSION: Final = "v1.34"
"""The Pod Security Standards version the member checks against. Pinned rather than ``latest``,
so that a member's upgrade cannot change what is refused in the middle of a job's life; raise
it together with the hub's policy (suanli.api.podpolicy)."""


def bounded_name(text: str, salt: str, limit: int = _MAX_NAME) -> str:
    """``text`` if it fits in ``limit``, else a prefix plus a short hash (still unique)."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(f"{text}/{salt}".encode()).hexdigest()[:10]
    return f"{text[: limit - 11].rstrip('-')}-{digest}"


def remote_namespace(job: ComputeJob) -> str:
    """One namespace per tenant on every member: ``suanli-<hub namespace>``."""
    namespace = job.metadata.namespace or "default"
    return bounded_name(f"suanli-{namespace}", namespace)


def remote_name(job: ComputeJob) -> str:
    """The remote Job's name: the ComputeJob's name, bounded, unique per ComputeJob uid.

    The uid keeps a deleted-and-recreated ComputeJob of the same name from adopting the
    first one's remote Job while that is still being deleted.
    """
    uid = (job.metadata.uid or "")[:8]
    return bounded_name(
        f"{job.metadata.name}-{uid}" if uid else str(job.metadata.name), uid, _MAX_JOB_NAME
    )


def copy_name(job_name: str, name: str) -> str:
    """The name of the copy of the tenant's Secret or ConfigMap ``name`` for the remote Job
    ``job_name`` (see :mod:`.copies`)."""
    return bounded_name(f"{job_name}-{name}", name, _MAX_OBJECT_NAME)


def job_labels(job: ComputeJob) -> dict[str, str]:
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        JOB_NAMESPACE_LABEL: job.metadata.namespace or "",
        JOB_NAME_LABEL: bounded_name(str(job.metadata.name), job.metadata.uid or ""),
        JOB_UID_LABEL: job.metadata.uid or "",
    }


def pod_security_labels(level: PodSecurityLevel) -> dict[str, str]:
    """The namespace labels with which the member's Pod Security admission enforces ``level``."""
    labels: dict[str, str] = {}
    for mode in POD_SECURITY_MODES:
        labels[f"{POD_SECURITY_LABEL_PREFIX}{mode}"] = level.value
        labels[f"{POD_SECURITY_LABEL_PREFIX}{mode}-version"] = POD_SECURITY_VERSION
    return labels


def enforces_at_least(labels: Mapping[str, str], level: PodSecurityLevel) -> bool:
    """Whether a namespace with ``labels`` enforces ``level`` or a stricter one.

    A namespace the member's admin prepared with a stricter level is left as it is; one that
    enforces less (or nothing) must be relabelled before suanli runs a pod in it.
    """
    value = labels.get(f"{POD_SECURITY_LABEL_PREFIX}enforce", "")
    try:
        enforced = PodSecurityLevel(value)
    except ValueError:
        return False  # "privileged", unset or unknown: enforces nothing suanli can count on
    return enforced.strictness >= level.strictness


def needs_relabel(have: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Whether an existing namespace labelled ``have`` must get the ``wanted`` labels of
    :func:`remote_namespace_object`: it does when it enforces less than they ask for."""
    asked = wanted.get(f"{POD_SECURITY_LABEL_PREFIX}enforce", "")
    try:
        level = PodSecurityLevel(asked)
    except ValueError:
        return False  # the caller asks for no Pod Security level: nothing to bring up
    return not enforces_at_least(have, level)


def remote_namespace_object(job: ComputeJob, level: PodSecurityLevel) -> dict[str, Any]:
    """The tenant's namespace on a member, enforcing the member's Pod Security ``level``."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": remote_namespace(job),
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY,
                JOB_NAMESPACE_LABEL: job.metadata.namespace,
                **pod_security_labels(level),
            },
        },
    }


@dataclass(frozen=True)
class ModelPin:
    """The node labels by which one accelerator model's nodes are known on one member, and the
    resource those nodes offer the devices as.

    The dispatcher reads a node's model from suanli's own label (:data:`MODEL_LABEL`, set by the
    member's admin) when it is there, and from a vendor's label otherwise (GPU feature
    discovery's product, Ascend's chip name); the pin repeats exactly that rule, so the pods
    land only where the model was counted.
    """

    model_label_values: frozenset[str] = frozenset()
    """Values of :data:`MODEL_LABEL` on nodes of the model."""
    product_values: frozenset[str] = frozenset()
    """Values of :data:`PRODUCT_LABEL` on nodes of the model that lack :data:`MODEL_LABEL`."""
    vendor_labels: frozenset[tuple[str, str]] = frozenset()
    """Other vendors' (key, value) labels on nodes of the model that lack :data:`MODEL_LABEL`."""
    resource: str | None = None
    """The extended resource the model's nodes advertise (None: the member's default)."""

    def with_node(
        self,
        model_label: str,
        product: str,
        model_by: tuple[str, str] | None = None,
        resource: str | None = None,
    ) -> ModelPin:
        """The pin widened by one more node's labels (and its resource, if not known yet)."""
        pin = (
            self
            if self.resource is not None or resource is None
            else replace(self, resource=resource)
        )
        if model_label:
            if model_label in pin.model_label_values:
                return pin
            return replace(pin, model_label_values=pin.model_label_values | {model_label})
        if model_by is not None and model_by[0] != PRODUCT_LABEL:
            if model_by in pin.vendor_labels:
                return pin
            return replace(pin, vendor_labels=pin.vendor_labels | {model_by})
        if not product or product in pin.product_values:
            return pin
        return replace(pin, product_values=pin.product_values | {product})

    def node_selector_terms(self) -> list[dict[str, Any]]:
        """Terms of a required node affinity (any term may match) that select the model."""
        terms: list[dict[str, Any]] = []
        if self.model_label_values:
            terms.append(_match(MODEL_LABEL, "In", self.model_label_values))
        unlabelled = {"key": MODEL_LABEL, "operator": "DoesNotExist"}
        if self.product_values:
            terms.append(
                {
                    "matchExpressions": [
                        *_match(PRODUCT_LABEL, "In", self.product_values)["matchExpressions"],
                        unlabelled,
                    ]
                }
            )
        for key in sorted({key for key, _ in self.vendor_labels}):
            values = frozenset(value for k, value in self.vendor_labels if k == key)
            terms.append(
                {"matchExpressions": [*_match(key, "In", values)["matchExpressions"], unlabelled]}
            )
        return terms


def _match(key: str, operator: str, values: frozenset[str]) -> dict[str, Any]:
    return {"matchExpressions": [{"key": key, "operator": operator, "values": sorted(values)}]}


def _pin_to_model(spec: dict[str, Any], pin: ModelPin) -> None:
    """Add ``pin``'s terms to the pod's required node affinity, ANDed with the tenant's own.

    Terms of a required node affinity are ORed, so each of the tenant's terms is combined with
    each of the pin's; the tenant cannot name the model labels (the hub's policy refuses it), so
    the combined terms never contradict themselves by construction.
    """
    pinned = pin.node_selector_terms()
    if not pinned:
        return
    affinity = spec.setdefault("affinity", {})
    node_affinity = affinity.setdefault("nodeAffinity", {})
    required = node_affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    own = required.get("nodeSelectorTerms") or [{}]
    required["nodeSelectorTerms"] = [
        {
            **term,
            "matchExpressions": [
                *(term.get("matchExpressions") or []),
                *pin_term["matchExpressions"],
            ],
        }
        for term in own
        for pin_term in pinned
    ]


def remote_job(
    job: ComputeJob,
    gpu_resource: str,
    pin: ModelPin | None,
    *,
    max_grace: int = DEFAULT_TERMINATION_GRACE_SECONDS,
) -> dict[str, Any]:
    """The batch/v1 Job that runs ``job``'s gang on a member.

    Every replica gets ``gpusPerReplica`` of the chosen model's resource (``pin.resource``;
    ``gpu_resource``, the member's default, when the pin does not know it) on its first
    container, and a
    required node affinity from ``pin`` (the labels of the chosen model's nodes), so the
    member's scheduler can only put it on that model. Every grace the pods get is bounded by
    ``max_grace`` (the platform's) and ``activeDeadlineSeconds`` is the job's maxRuntime less
    that grace (:mod:`suanli.api.termination`): the member stops the job in time for its pods
    to be gone by maxRuntime, which is what the hold covers. Pods are never retried
    (backoffLimit 0): a retry would run, and be charged, again behind the tenant's back. Pods
    get neither a ServiceAccount token nor Service links (see the module notes). References
    to Secrets and ConfigMaps name the job's copies; a gang's pods get the rendezvous subdomain
    and launcher variables (:mod:`.rendezvous`).
    """
    labels = job_labels(job)
    name, namespace = remote_name(job), remote_namespace(job)
    template = copy.deepcopy(job.spec.template)
    # The template names the tenant's hub objects; on the member it uses this job's copies.
    rename_references(template, lambda _, original: copy_name(name, original))
    metadata = template.setdefault("metadata", {})
    metadata.setdefault("labels", {}).update(labels)
    spec = template.setdefault("spec", {})
    lifetime = pod_lifetime(int(job.spec.max_runtime.total_seconds()), job.spec.template, max_grace)
    bound_graces(spec, lifetime.grace)
    spec.setdefault("restartPolicy", "Never")
    spec["automountServiceAccountToken"] = False
    spec["enableServiceLinks"] = False
    gpu_resource = (pin.resource if pin is not None else None) or gpu_resource
    containers = spec.get("containers") or []
    if containers:
        resources = containers[0].setdefault("resources", {})
        gpus = str(job.spec.gpus_per_replica)
        resources.setdefault("limits", {})[gpu_resource] = gpus
        resources.setdefault("requests", {})[gpu_resource] = gpus
    if pin is not None:
        _pin_to_model(spec, pin)
    # GPU node pools are commonly tainted so that only GPU workloads land there.
    tolerations = spec.setdefault("tolerations", [])
    tolerations.append({"key": gpu_resource, "operator": "Exists", "effect": "NoSchedule"})
    replicas = job.spec.replicas
    if replicas > 1:
        spec["subdomain"] = service_name(name)
        add_launcher_env(spec, launcher_env(name, namespace, replicas, job.spec.gpus_per_replica))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {HUB_ANNOTATION: f"{job.metadata.namespace}/{job.metadata.name}"},
        },
        "spec": {
            "parallelism": replicas,
            "completions": replicas,
            "completionMode": "Indexed",
            "backoffLimit": 0,
            "activeDeadlineSeconds": lifetime.active_deadline,
            "template": template,
        },
    }


def gang_service(job: ComputeJob, owner_uid: str) -> dict[str, Any] | None:
    """The headless Service of ``job``'s gang on its member, owned by the remote Job of uid
    ``owner_uid``; None for a single replica, which has no peers to find."""
    if job.spec.replicas <= 1:
        return None
    return headless_service(
        remote_name(job),
        remote_namespace(job),
        {JOB_UID_LABEL: job.metadata.uid or ""},
        job_labels(job),
        owner_uid,
    )
