"""ComputeJob: a tenant's GPU job, submitted to the hub and run on one member cluster.

A ComputeJob is a gang: ``replicas`` pods with ``gpusPerReplica`` GPUs each, all placed in the
same member cluster or not at all. At admission its worst case (all GPUs for the whole
``maxRuntime`` at the highest price it could be placed at) is reserved on a VoucherQuota; when
it ends, what it actually used is charged and the rest released. ``maxRuntime`` is therefore
both the cost estimate and a hard deadline.

Status is written by the operator only. Logic reads the conditions (see ``reasons.py``) and
the recorded facts; ``phase`` is a summary for ``kubectl get``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import Field, WithJsonSchema

from suanli.api.accelerators import Vendor
from suanli.api.common import (
    ApiModel,
    Condition,
    DNSLabel,
    DNSSubdomain,
    Duration,
    GPUModel,
    LocalObjectReference,
    Money,
    ObjectMeta,
    Timestamp,
    conditions_field,
    format_duration,
    is_dns_label,
    set_field,
)
from suanli.api.meta import AGE_COLUMN, KindInfo, PrinterColumn
from suanli.api.podpolicy import template_errors
from suanli.api.references import (
    reference_limit_errors,
    template_references,
    unportable_errors,
)
from suanli.api.validation import FieldError, duplicate_errors

MAX_REPLICAS: Final = 64
MAX_GPUS_PER_REPLICA: Final = 16
# A gang is placed in one cluster; beyond this it would hold a whole member hostage.
MAX_GPUS_PER_JOB: Final = 256
MAX_GPU_MODELS: Final = 16
MIN_PRIORITY: Final = -1000
MAX_PRIORITY: Final = 1000
# The deadline cap keeps the worst-case reservation (GPUs x maxRuntime x price) bounded.
MAX_JOB_RUNTIME: Final = timedelta(hours=720)
MAX_PLACEMENT_CLUSTERS: Final = 64
MAX_PLACEMENT_REGIONS: Final = 16
MAX_ATTEMPTS: Final = 16
MAX_FAILURES: Final = 8
"""Failed pods mirrored into a job's status: the first ones by replica index."""
FAILURE_MESSAGE_MAX: Final = 512
"""Characters of a container's termination message kept (its tail: the last lines say why)."""
MAX_TFLOPS: Final = 100_000
MAX_MEMORY_GIB: Final = 4096
MAX_VENDORS: Final = 10

ALLOWED_RESTART_POLICIES: Final = ("Never", "OnFailure")


class JobPhase(StrEnum):
    """Where a job is in its life; a summary of the conditions for people."""

    PENDING = "Pending"
    QUEUED = "Queued"
    DISPATCHED = "Dispatched"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    REJECTED = "Rejected"


FINISHED_PHASES: Final = frozenset({JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.REJECTED})


class PlacementPolicy(StrEnum):
    """How to choose among member clusters that can run the job now."""

    CHEAPEST = "Cheapest"
    MOST_HEADROOM = "MostHeadroom"


PodTemplate = Annotated[
    dict[str, Any],
    # The one place unknown fields are kept: the pod template is Kubernetes' own type, checked
    # by the member's API server when the workload is created there.
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]


class Placement(ApiModel):
    """Where the job may run and how to choose among the clusters that qualify."""

    clusters: list[DNSLabel] = set_field(
        "clusters is an allow-list of MemberCluster names, at most 64; empty allows every "
        "member the voucher allows.",
        MAX_PLACEMENT_CLUSTERS,
    )
    regions: list[DNSLabel] = set_field(
        "regions is an allow-list of member regions (MemberCluster spec.region), at most 16; "
        "empty allows every region.",
        MAX_PLACEMENT_REGIONS,
    )
    policy: PlacementPolicy = Field(
        PlacementPolicy.CHEAPEST,
        description="policy chooses among the clusters that can run the job now: Cheapest "
        "(lowest price per GPU-hour, or per PFLOPS-hour for a job that sets capability, then "
        "most free GPUs) or MostHeadroom (most free GPUs, then lowest price). Defaults to "
        "Cheapest.",
    )


class Capability(ApiModel):
    """What each device must offer, whatever its model: for jobs that ask by capability."""

    min_fp16_tflops: int | None = Field(
        None,
        alias="minFP16TFLOPS",
        ge=1,
        le=MAX_TFLOPS,
        description="minFP16TFLOPS is the least dense FP16/BF16 tensor throughput one device "
        "must have, in TFLOPS, 1 to 100000, as the accelerator catalogue lists it (see "
        "docs/accelerators.md). A model without a known figure never qualifies.",
    )
    min_memory_gib: int | None = Field(
        None,
        alias="minMemoryGiB",
        ge=1,
        le=MAX_MEMORY_GIB,
        description="minMemoryGiB is the least memory one device must have, in GiB, 1 to 4096.",
    )
    vendors: list[Vendor] = set_field(
        "vendors lists the accelerator vendors the job accepts (NVIDIA, Huawei, Cambricon, "
        "Hygon, ...), at most 10; empty accepts every vendor.",
        MAX_VENDORS,
    )

    @property
    def empty(self) -> bool:
        return self.min_fp16_tflops is None and self.min_memory_gib is None and not self.vendors


class ComputeJobSpec(ApiModel):
    """What the tenant asks for."""

    replicas: int = Field(
        1,
        ge=1,
        le=MAX_REPLICAS,
        description="replicas is the number of pods in the gang, 1 to 64; all of them run in "
        "the same member cluster. Defaults to 1.",
    )
    gpus_per_replica: int = Field(
        1,
        ge=1,
        le=MAX_GPUS_PER_REPLICA,
        description="gpusPerReplica is the number of GPUs each pod gets, 1 to 16; replicas x "
        "gpusPerReplica is at most 256. Defaults to 1.",
    )
    gpu_models: list[GPUModel] = set_field(
        'gpuModels lists the GPU models the job accepts (e.g. "H100", "A800"), at most 16; '
        "empty accepts every model the voucher allows. All replicas get the same model.",
        MAX_GPU_MODELS,
    )
    capability: Capability | None = Field(
        None,
        description="capability asks for devices by what they offer rather than by name: a "
        "minimum FP16 TFLOPS and memory per device, and optionally vendors. Every model that "
        "qualifies (and is in gpuModels, when that is set) is a candidate, and the Cheapest "
        "policy then compares members by price per PFLOPS-hour delivered.",
    )
    template: PodTemplate = Field(
        description="template is the pod template every replica runs (a PodTemplateSpec with "
        "metadata and spec; at least one container). Leave GPU resources out: the operator "
        "adds the chosen model's accelerator resource (nvidia.com/gpu, huawei.com/Ascend910, "
        "...), gpusPerReplica of it, to the first container.",
    )
    max_runtime: Duration = Field(
        description="maxRuntime is the longest the job may run once dispatched, as whole "
        'hours, minutes and seconds ("30m", "2h", "1h30m"), at most 720h. It prices the '
        "reservation and is a hard deadline: the job is stopped and fails when it passes.",
    )
    priority: int = Field(
        0,
        ge=MIN_PRIORITY,
        le=MAX_PRIORITY,
        description="priority orders queued jobs, -1000 to 1000, higher first; equal "
        "priorities go first come, first served. Defaults to 0.",
    )
    voucher_ref: LocalObjectReference | None = Field(
        None,
        description="voucherRef names the VoucherQuota in the job's namespace to charge. "
        "When omitted, the namespace must hold exactly one active VoucherQuota, which is used.",
    )
    placement: Placement = Field(
        default_factory=Placement,
        description="placement restricts where the job may run and sets how to choose.",
    )

    @property
    def total_gpus(self) -> int:
        """GPUs the whole gang holds."""
        return self.replicas * self.gpus_per_replica


class RemoteObjectReference(ApiModel):
    """The workload the operator created for this job on the member cluster."""

    api_version: str = Field(
        max_length=253, description="apiVersion is the remote object's API version."
    )
    kind: str = Field(max_length=63, description="kind is the remote object's kind.")
    namespace: DNSLabel = Field(description="namespace is the remote object's namespace.")
    name: DNSSubdomain = Field(description="name is the remote object's name.")
    uid: str | None = Field(
        None, max_length=64, description="uid is the remote object's uid on the member."
    )


class Attempt(ApiModel):
    """One placement of the job on a member cluster, kept after it ends."""

    cluster: DNSLabel = Field(description="cluster is the MemberCluster the attempt ran on.")
    provider: DNSLabel | None = Field(
        None, description="provider is that member's provider when the attempt was placed."
    )
    region: DNSLabel | None = Field(
        None, description="region is that member's region when the attempt was placed."
    )
    gpu_model: GPUModel | None = Field(
        None, description="gpuModel is the GPU model the attempt was placed on."
    )
    price_per_gpu_hour: Money | None = Field(
        None,
        alias="pricePerGPUHour",
        description="pricePerGPUHour is the member's price for gpuModel when the attempt was "
        "placed, in the voucher's currency per GPU-hour; the attempt is charged at it.",
    )
    start_time: Timestamp | None = Field(
        None, description="startTime is when the remote workload was created (RFC 3339)."
    )
    end_time: Timestamp | None = Field(
        None, description="endTime is when the attempt ended (RFC 3339)."
    )
    reason: str | None = Field(
        None,
        max_length=64,
        pattern=r"^[A-Za-z][A-Za-z0-9]*$",
        description="reason says why the attempt ended: Succeeded, Failed, DeadlineExceeded, "
        "MemberLost, MemberRemoved, WithdrawnUnschedulable or Deleted.",
    )
    message: str | None = Field(
        None, max_length=1024, description="message gives details, at most 1024 characters."
    )
    gpu_seconds: int | None = Field(
        None,
        ge=0,
        description="gpuSeconds is the GPU time the attempt used, in GPU-seconds (GPUs held "
        "times seconds running).",
    )
    charge: Money | None = Field(
        None,
        description="charge is what the attempt cost, in the voucher's currency.",
    )


class PodFailure(ApiModel):
    """Why one pod of the job failed on its member, as the member's kubelet reported it."""

    replica: int | None = Field(
        None, ge=0, description="replica is the pod's completion index (its NODE_RANK)."
    )
    pod: str = Field(max_length=253, description="pod is the pod's name on the member.")
    cluster: DNSLabel = Field(description="cluster is the MemberCluster the pod ran on.")
    node: str | None = Field(
        None, max_length=253, description="node is the member's node the pod ran on."
    )
    container: str | None = Field(
        None, max_length=253, description="container is the container that failed, if one did."
    )
    reason: str | None = Field(
        None,
        max_length=128,
        description="reason is the kubelet's word for it: OOMKilled, Error, DeadlineExceeded, "
        "Evicted, ContainerCannotRun, ...",
    )
    exit_code: int | None = Field(
        None, description="exitCode is the container's exit status (137: killed by SIGKILL)."
    )
    oom_killed: bool | None = Field(
        None,
        alias="oomKilled",
        description="oomKilled is true when the container was killed for exceeding its memory "
        "limit; raise resources.limits.memory.",
    )
    message: str | None = Field(
        None,
        max_length=FAILURE_MESSAGE_MAX,
        description="message is the end of the container's termination message "
        "(/dev/termination-log), or the pod's status message, at most 512 characters.",
    )


class ComputeJobStatus(ApiModel):
    """What the operator observed and did; written by the operator only."""

    phase: JobPhase | None = Field(
        None,
        description="phase summarizes the job for people: Pending, Queued, Dispatched, Running, "
        "Succeeded, Failed or Rejected. Programs should read conditions instead.",
    )
    observed_generation: int | None = Field(
        None,
        ge=0,
        description="observedGeneration is the metadata.generation the status reflects.",
    )
    total_gpus: int | None = Field(
        None,
        alias="totalGPUs",
        ge=1,
        le=MAX_GPUS_PER_JOB,
        description="totalGPUs is replicas x gpusPerReplica, in GPUs, copied here so that "
        "kubectl can print it.",
    )
    voucher: DNSSubdomain | None = Field(
        None,
        description="voucher is the name of the VoucherQuota the reservation and charge are "
        "held against.",
    )
    cluster: DNSLabel | None = Field(
        None, description="cluster is the MemberCluster the job is placed on, if any."
    )
    remote_ref: RemoteObjectReference | None = Field(
        None, description="remoteRef points at the workload created on the member cluster."
    )
    reservation: Money | None = Field(
        None,
        description="reservation is the amount currently held on the voucher for this job, in "
        "the voucher's currency; 0.00 once charged or released.",
    )
    estimated_cost: Money | None = Field(
        None,
        description="estimatedCost is the worst-case cost priced at admission (all GPUs for the "
        "whole maxRuntime at the highest eligible price), in the voucher's currency.",
    )
    charged_cost: Money | None = Field(
        None,
        description="chargedCost is what the job was charged in total, in the voucher's "
        "currency; set once the job is finished.",
    )
    gpu_seconds: int | None = Field(
        None,
        ge=0,
        description="gpuSeconds is the GPU time used over all attempts, in GPU-seconds.",
    )
    start_time: Timestamp | None = Field(
        None, description="startTime is when the job first started running (RFC 3339)."
    )
    completion_time: Timestamp | None = Field(
        None, description="completionTime is when the job finished (RFC 3339)."
    )
    attempts: list[Attempt] = Field(
        default_factory=list,
        max_length=MAX_ATTEMPTS,
        description="attempts records each placement on a member cluster, oldest first, at most "
        "16.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    failures: list[PodFailure] = Field(
        default_factory=list,
        max_length=MAX_FAILURES,
        description="failures says, for the job's failed pods (at most 8), what went wrong "
        "and where: replica, pod, node, container, reason, exit code, OOM kill and message.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    conditions: list[Condition] = conditions_field(
        "conditions are Reserved, Dispatched, Running, Finished and Charged; see their reasons."
    )


class ComputeJob(ApiModel):
    """A GPU job: a gang of pods run on one member cluster, charged to a compute voucher."""

    api_version: Literal["suanli.io/v1alpha1"] = Field(
        "suanli.io/v1alpha1", description="apiVersion is suanli.io/v1alpha1."
    )
    kind: Literal["ComputeJob"] = Field("ComputeJob", description="kind is ComputeJob.")
    metadata: ObjectMeta = Field(
        default_factory=ObjectMeta, description="metadata is the standard object metadata."
    )
    spec: ComputeJobSpec = Field(description="spec is what the tenant asks for.")
    status: ComputeJobStatus = Field(
        default_factory=ComputeJobStatus,
        description="status is what the operator observed; written by the operator only.",
    )


KIND_INFO: Final = KindInfo(
    kind="ComputeJob",
    plural="computejobs",
    scope="Namespaced",
    # Not "cj": that is CronJob's short name, and built-in resources win the match.
    short_names=("cjob",),
    printer_columns=(
        PrinterColumn("Phase", "string", ".status.phase", "Where the job is in its life."),
        PrinterColumn("GPUs", "integer", ".status.totalGPUs", "replicas x gpusPerReplica."),
        PrinterColumn("Cluster", "string", ".status.cluster", "Member cluster it runs on."),
        PrinterColumn("Cost", "string", ".status.chargedCost", "Charged cost, once finished."),
        AGE_COLUMN,
        PrinterColumn(
            "Estimate", "string", ".status.estimatedCost", "Worst-case cost.", priority=1
        ),
        PrinterColumn("Voucher", "string", ".status.voucher", "Voucher charged.", priority=1),
        PrinterColumn("Priority", "integer", ".spec.priority", "Queue priority.", priority=1),
    ),
)


# --- validation ---------------------------------------------------------------------------------


def validate_computejob(job: ComputeJob) -> list[FieldError]:
    """The rules of a ComputeJob that its schema cannot express.

    Voucher-dependent limits (GPUs per job, models, clusters, balance) are checked at admission
    against the voucher, not here: this function needs nothing but the object.
    """
    spec = job.spec
    errors: list[FieldError] = []
    name = job.metadata.name
    if name is not None and not is_dns_label(name):
        errors.append(
            FieldError(
                "metadata.name",
                "must be a DNS-1123 label (lower-case letters, digits and '-', at most 63), "
                "because it names the job's workload and labels on member clusters",
            )
        )
    if spec.total_gpus > MAX_GPUS_PER_JOB:
        errors.append(
            FieldError(
                "spec.gpusPerReplica",
                f"replicas x gpusPerReplica is {spec.total_gpus} GPUs, above the per-job "
                f"maximum of {MAX_GPUS_PER_JOB}",
            )
        )
    if spec.max_runtime <= timedelta(0):
        errors.append(FieldError("spec.maxRuntime", "must be greater than 0s"))
    elif spec.max_runtime > MAX_JOB_RUNTIME:
        errors.append(
            FieldError(
                "spec.maxRuntime",
                f"{format_duration(spec.max_runtime)} is above the maximum of "
                f"{format_duration(MAX_JOB_RUNTIME)}",
            )
        )
    errors += duplicate_errors("spec.gpuModels", spec.gpu_models, "GPU model")
    if spec.capability is not None:
        errors += duplicate_errors(
            "spec.capability.vendors", [v.value for v in spec.capability.vendors], "vendor"
        )
        if spec.capability.empty:
            errors.append(
                FieldError(
                    "spec.capability",
                    "set at least one of minFP16TFLOPS, minMemoryGiB or vendors, or leave "
                    "capability out",
                )
            )
    errors += duplicate_errors("spec.placement.clusters", spec.placement.clusters, "cluster")
    errors += duplicate_errors("spec.placement.regions", spec.placement.regions, "region")
    errors += _template_shape_errors(spec.template)
    # What the template may contain (host access, steering, accelerators) is the pod policy's.
    errors += template_errors(spec.template)
    errors += unportable_errors(spec.template)
    errors += reference_limit_errors(template_references(spec.template))
    return errors


def _template_shape_errors(template: Mapping[str, Any]) -> list[FieldError]:
    """The template's shape and what a ComputeJob needs in it; podpolicy says what it may hold."""
    base = "spec.template"
    errors: list[FieldError] = []
    metadata = template.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        errors.append(FieldError(f"{base}.metadata", "must be an object"))
    pod_spec = template.get("spec")
    if not isinstance(pod_spec, Mapping):
        errors.append(
            FieldError(f"{base}.spec", "required: a pod spec with at least one container")
        )
        return errors
    containers = pod_spec.get("containers")
    if not isinstance(containers, list) or not containers:
        errors.append(FieldError(f"{base}.spec.containers", "must list at least one container"))
        containers = []
    seen: set[str] = set()
    for index, container in enumerate(containers):
        path = f"{base}.spec.containers[{index}]"
        errors += _container_errors(path, container)
        name = container.get("name") if isinstance(container, Mapping) else None
        if isinstance(name, str) and name in seen:
            errors.append(FieldError(f"{path}.name", f"duplicate container name {name!r}"))
        if isinstance(name, str):
            seen.add(name)
    restart_policy = pod_spec.get("restartPolicy")
    if restart_policy is not None and restart_policy not in ALLOWED_RESTART_POLICIES:
        errors.append(
            FieldError(
                f"{base}.spec.restartPolicy",
                f"must be Never or OnFailure, not {restart_policy!r}: a ComputeJob runs to "
                "completion",
            )
        )
    return errors


def _container_errors(path: str, container: object) -> list[FieldError]:
    if not isinstance(container, Mapping):
        return [FieldError(path, "must be an object with a name and an image")]
    errors: list[FieldError] = []
    name = container.get("name")
    if not isinstance(name, str) or not is_dns_label(name):
        errors.append(FieldError(f"{path}.name", "required: a DNS-1123 label, at most 63"))
    image = container.get("image")
    if not isinstance(image, str) or not image.strip():
        errors.append(FieldError(f"{path}.image", "required: the container image to run"))
    return errors
