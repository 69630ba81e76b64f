"""The workload a ComputeJob becomes on a member cluster: a batch/v1 Job, built by pure functions.

Names are deterministic (derived from the ComputeJob's namespace, name and uid), so creating the
workload again after a crash finds the first copy (AlreadyExists) instead of making a second one.
Labels lead back to the ComputeJob, so the member's watch can tell which job a pod belongs to.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any, Final

from suanli.api.computejob import ComputeJob
from suanli.api.podpolicy import DEFAULT_POD_SECURITY_LEVEL
from suanli.dispatch.gpu_models import PRODUCT_LABEL
from suanli.dispatch.kube import JOB_LABEL

JOB_NAMESPACE_LABEL: Final = "suanli.io/job-namespace"
JOB_NAME_LABEL: Final = "suanli.io/job-name"
JOB_UID_LABEL: Final = JOB_LABEL  # the dispatcher finds a pod's ComputeJob by it
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "suanli"
HUB_ANNOTATION: Final = "suanli.io/computejob"
POD_SECURITY_ENFORCE_LABEL: Final = "pod-security.kubernetes.io/enforce"

_MAX_NAME: Final = 63


def _bounded(text: str, salt: str, limit: int = _MAX_NAME) -> str:
    """``text`` if it fits in ``limit``, else a prefix plus a short hash (still unique)."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(f"{text}/{salt}".encode()).hexdigest()[:10]
    return f"{text[: limit - 11].rstrip('-')}-{digest}"


def remote_namespace(job: ComputeJob) -> str:
    """One namespace per tenant on every member: ``suanli-<hub namespace>``."""
    namespace = job.metadata.namespace or "default"
    return _bounded(f"suanli-{namespace}", namespace)


def remote_name(job: ComputeJob) -> str:
    """The remote Job's name: the ComputeJob's name, bounded, unique per ComputeJob uid.

    The uid keeps a deleted-and-recreated ComputeJob of the same name from adopting the
    first one's remote Job while that is still being deleted.
    """
    uid = (job.metadata.uid or "")[:8]
    return _bounded(f"{job.metadata.name}-{uid}" if uid else str(job.metadata.name), uid)


def job_labels(job: ComputeJob) -> dict[str, str]:
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        JOB_NAMESPACE_LABEL: job.metadata.namespace or "",
        JOB_NAME_LABEL: _bounded(str(job.metadata.name), job.metadata.uid or ""),
        JOB_UID_LABEL: job.metadata.uid or "",
    }


def remote_namespace_object(job: ComputeJob) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": remote_namespace(job),
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY,
                JOB_NAMESPACE_LABEL: job.metadata.namespace,
                # The member's Pod Security admission holds the job's pods to the default
                # level, and the hub's identity may create no namespace without it (the
                # member-access policy, suanli.member_access).
                POD_SECURITY_ENFORCE_LABEL: DEFAULT_POD_SECURITY_LEVEL.value,
            },
        },
    }


def remote_job(job: ComputeJob, gpu_resource: str, gpu_product: str | None) -> dict[str, Any]:
    """The batch/v1 Job that runs ``job``'s gang on a member.

    Every replica gets ``gpusPerReplica`` of ``gpu_resource`` on its first container, and a
    node selector for ``gpu_product`` (the GPU feature discovery label of the chosen model),
    so the member's scheduler can only put it on that model. ``activeDeadlineSeconds`` is the
    job's maxRuntime: the member stops the job when it runs out. Pods are never retried
    (backoffLimit 0): a retry would run, and be charged, again behind the tenant's back.
    """
    labels = job_labels(job)
    template = copy.deepcopy(job.spec.template)
    metadata = template.setdefault("metadata", {})
    metadata.setdefault("labels", {}).update(labels)
    spec = template.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Never")
    containers = spec.get("containers") or []
    if containers:
        resources = containers[0].setdefault("resources", {})
        gpus = str(job.spec.gpus_per_replica)
        resources.setdefault("limits", {})[gpu_resource] = gpus
        resources.setdefault("requests", {})[gpu_resource] = gpus
    if gpu_product:
        spec.setdefault("nodeSelector", {})[PRODUCT_LABEL] = gpu_product
    # GPU node pools are commonly tainted so that only GPU workloads land there.
    tolerations = spec.setdefault("tolerations", [])
    tolerations.append({"key": gpu_resource, "operator": "Exists", "effect": "NoSchedule"})
    replicas = job.spec.replicas
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": remote_name(job),
            "namespace": remote_namespace(job),
            "labels": labels,
            "annotations": {HUB_ANNOTATION: f"{job.metadata.namespace}/{job.metadata.name}"},
        },
        "spec": {
            "parallelism": replicas,
            "completions": replicas,
            "completionMode": "Indexed",
            "backoffLimit": 0,
            "activeDeadlineSeconds": int(job.spec.max_runtime.total_seconds()),
            "template": template,
        },
    }
