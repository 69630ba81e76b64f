"""MemberCluster: a GPU cluster of one provider, joined to the hub.

The cluster admin registers a member with a kubeconfig (in a Secret), its region and provider,
and the price per GPU-hour of each GPU model it offers; the price list is also the list of
models the hub will place jobs on. The operator probes the member's API server, reads its GPU
telemetry and keeps the per-model inventory in status, from which the dispatcher picks.

MemberCluster is cluster-scoped: members are shared by all tenants.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from pydantic import Field

from suanli.api.accelerators import VENDOR_RESOURCES, Vendor, is_accelerator_resource
from suanli.api.common import (
    DEFAULT_CURRENCY,
    DNS_SUBDOMAIN_PATTERN,
    MONEY_HELP,
    ApiModel,
    Condition,
    Currency,
    DNSLabel,
    DNSSubdomain,
    GPUModel,
    Money,
    ObjectMeta,
    Timestamp,
    conditions_field,
    is_dns_label,
    is_dns_subdomain,
    set_field,
)
from suanli.api.meta import AGE_COLUMN, KindInfo, PrinterColumn
from suanli.api.podpolicy import DEFAULT_POD_SECURITY_LEVEL, PodSecurityLevel
from suanli.api.validation import FieldError, duplicate_errors

DEFAULT_GPU_RESOURCE: Final = "nvidia.com/gpu"
DEFAULT_KUBECONFIG_KEY: Final = "kubeconfig"
MAX_PRICES: Final = 32
MAX_TELEMETRY_ENDPOINTS: Final = 16
MAX_GPUS_PER_MEMBER: Final = 1_000_000
MAX_ACCELERATORS: Final = 32
MAX_TFLOPS: Final = 100_000
MAX_MEMORY_GIB: Final = 4096
# PFLOPS with three decimals: exact for sums of whole TFLOPS.
PFLOPS_PATTERN: Final = r"^(0|[1-9][0-9]{0,11})\.[0-9]{3}$"

# An extended resource name must carry a domain prefix: "nvidia.com/gpu", "amd.com/gpu".
GPU_RESOURCE_PATTERN: Final = (
    DNS_SUBDOMAIN_PATTERN.removesuffix("$") + r"/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
SECRET_KEY_PATTERN: Final = r"^[-._a-zA-Z0-9]+$"
URL_PATTERN: Final = r"^https?://[^\s/?#]+[^\s]*$"
URL_MAX: Final = 2048
MAX_ALLOWED_RESOURCES: Final = 32
MAX_INLINE_VOLUME_DRIVERS: Final = 16

ResourceName = Annotated[str, Field(pattern=GPU_RESOURCE_PATTERN, max_length=253)]
DriverName = Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=63)]

TelemetryURL = Annotated[str, Field(pattern=URL_PATTERN, max_length=URL_MAX)]


class SecretKeyReference(ApiModel):
    """A key of a Secret in a named namespace."""

    name: DNSSubdomain = Field(description="name is the Secret's name.")
    namespace: DNSLabel = Field(
        description="namespace is the Secret's namespace, usually the operator's own "
        "(suanli-system): the operator needs read access to it.",
    )
    key: str = Field(
        DEFAULT_KUBECONFIG_KEY,
        min_length=1,
        max_length=253,
        pattern=SECRET_KEY_PATTERN,
        description="key is the Secret data key that holds the kubeconfig. Defaults to kubeconfig.",
    )


class GPUPrice(ApiModel):
    """The price of one GPU model on this member."""

    gpu_model: GPUModel = Field(
        description='gpuModel is the GPU model this price is for, e.g. "H100".',
    )
    price_per_gpu_hour: Money = Field(
        alias="pricePerGPUHour",
        description="pricePerGPUHour is what one GPU of this model costs for one hour, in the "
        f"member's currency, {MONEY_HELP}; above 0. Use is charged by the second.",
    )


class AcceleratorEntry(ApiModel):
    """A model the member offers that the built-in catalogue lacks or gets wrong."""

    model: GPUModel = Field(
        description="model is the short model name, as prices and jobs name it (e.g. "
        '"MLU590"); an entry for a built-in model replaces the built-in figures on this member.',
    )
    vendor: Vendor = Field(description="vendor is who makes it: NVIDIA, Huawei, Cambricon, ...")
    resource_name: str | None = Field(
        None,
        max_length=253,
        pattern=GPU_RESOURCE_PATTERN,
        description="resourceName is the extended resource the device plugin advertises one "
        "device as; defaults to the vendor's usual one (nvidia.com/gpu, huawei.com/Ascend910, "
        "cambricon.com/mlu, hygon.com/dcu, ...).",
    )
    fp16_tflops: int | None = Field(
        None,
        alias="fp16TFLOPS",
        ge=1,
        le=MAX_TFLOPS,
        description="fp16TFLOPS is one device's dense FP16/BF16 tensor throughput, in whole "
        "TFLOPS, 1 to 100000; without it the devices add no PFLOPS and never qualify for jobs "
        "that ask by capability.",
    )
    memory_gib: int = Field(
        ge=1,
        le=MAX_MEMORY_GIB,
        alias="memoryGiB",
        description="memoryGiB is one device's memory, in GiB, 1 to 4096.",
    )

    @property
    def resource(self) -> str:
        return self.resource_name or VENDOR_RESOURCES[self.vendor]


class MemberClusterSpec(ApiModel):
    """How to reach the member, where it is and what its GPUs cost."""

    kubeconfig_secret_ref: SecretKeyReference = Field(
        description="kubeconfigSecretRef points at the Secret key holding a kubeconfig for "
        "the member's API server.",
    )
    region: DNSLabel = Field(
        description='region is where the member is, e.g. "shanghai-pudong"; jobs can ask for '
        "regions in spec.placement.regions.",
    )
    provider: DNSLabel | None = Field(
        None,
        description="provider names the organisation running the member, for people and metrics.",
    )
    gpu_resource_name: str = Field(
        DEFAULT_GPU_RESOURCE,
        max_length=253,
        pattern=GPU_RESOURCE_PATTERN,
        description="gpuResourceName is the extended resource the member's nodes advertise "
        "GPUs as. Defaults to nvidia.com/gpu.",
    )
    currency: Currency = Field(
        DEFAULT_CURRENCY,
        description="currency is the ISO 4217 code of the prices; only vouchers in the same "
        "currency pay for this member. Defaults to CNY.",
    )
    prices: list[GPUPrice] = Field(
        min_length=1,
        max_length=MAX_PRICES,
        description="prices lists the price per GPU-hour of each GPU model the member offers, "
        "1 to 32 entries, one per model. GPUs of a model without a price get no jobs.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["gpuModel"],
        },
    )
    accelerators: list[AcceleratorEntry] = Field(
        default_factory=list,
        max_length=MAX_ACCELERATORS,
        description="accelerators adds models to the built-in accelerator catalogue, or "
        "corrects its figures, for this member only, at most 32 (see docs/accelerators.md).",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["model"],
        },
    )
    telemetry_endpoints: list[TelemetryURL] = set_field(
        "telemetryEndpoints lists http(s) URLs of accelerator metrics endpoints in Prometheus "
        "text format (suanli's exporter, dcgm-exporter, or Ascend's npu-exporter), at most 16 "
        "of at most 2048 characters. An exporter whose series do not name their node "
        "(npu-exporter) needs the node as a fragment: http://10.0.0.5:8082/metrics#node=n1. "
        "Without one, only the member's API server view of its GPUs is used.",
        MAX_TELEMETRY_ENDPOINTS,
    )
    owner_company: str | None = Field(
        None,
        min_length=1,
        max_length=63,
        description="ownerCompany is the company (a suanli.io/company value) that owns the "
        "center, if any: its own jobs here get no programme subsidy (related party).",
    )
    cordoned: bool = Field(
        False,
        description="cordoned, when true, stops new jobs from being placed on the member; "
        "jobs already there run on. Defaults to false.",
    )
    allowed_resources: list[ResourceName] = set_field(
        "allowedResources lists the extended resources, other than accelerators, that a job's "
        "pods may request here (RDMA or SR-IOV network devices, say), at most 32. A job whose "
        "template requests an extended resource runs only on members that list it; cpu, memory, "
        "ephemeral-storage and hugepages need no entry. An accelerator resource (the vendors' "
        "domains, gpuResourceName, accelerators[].resourceName) may not be listed: accelerators "
        "come from a job's gpusPerReplica only, and are charged.",
        MAX_ALLOWED_RESOURCES,
    )
    inline_volume_drivers: list[DriverName] = set_field(
        "inlineVolumeDrivers lists the CSI drivers whose inline ephemeral volumes (a pod "
        "volume of type csi) a job may mount here, at most 16. A job with such a volume runs "
        "only on members that list its driver; a volume with a nodePublishSecretRef is always "
        "refused.",
        MAX_INLINE_VOLUME_DRIVERS,
    )
    pod_security_level: PodSecurityLevel = Field(
        DEFAULT_POD_SECURITY_LEVEL,
        description="podSecurityLevel is the Pod Security Standards level the member requires "
        "of every pod suanli runs there: baseline or restricted. The hub refuses any template "
        "below baseline; a job whose template does not meet restricted is not placed on a "
        "restricted member. The namespaces suanli creates on the member enforce this level "
        "themselves (pod-security.kubernetes.io/enforce). Defaults to baseline.",
    )

    def price_of(self, gpu_model: str) -> Decimal | None:
        """The price per GPU-hour of ``gpu_model``, or ``None`` if the member does not offer it."""
        return next(
            (price.price_per_gpu_hour for price in self.prices if price.gpu_model == gpu_model),
            None,
        )


class GPUInventory(ApiModel):
    """The member's GPUs of one model."""

    model: GPUModel = Field(description="model is the GPU model counted here.")
    total: int = Field(
        ge=0,
        le=MAX_GPUS_PER_MEMBER,
        description="total is the number of GPUs of this model the member's nodes report "
        "(capacity), in GPUs.",
    )
    allocatable: int = Field(
        ge=0,
        le=MAX_GPUS_PER_MEMBER,
        description="allocatable is the GPUs of this model on schedulable nodes, in GPUs.",
    )
    free: int = Field(
        ge=0,
        le=MAX_GPUS_PER_MEMBER,
        description="free is allocatable minus GPUs requested by live pods and minus GPUs the "
        "telemetry shows busy, in GPUs.",
    )
    busy: int | None = Field(
        None,
        ge=0,
        le=MAX_GPUS_PER_MEMBER,
        description="busy is the GPUs of this model the telemetry shows in use, in GPUs.",
    )
    utilization_percent: int | None = Field(
        None,
        ge=0,
        le=100,
        description="utilizationPercent is the mean utilization of these GPUs, in percent, "
        "0 to 100.",
    )
    vendor: Vendor | None = Field(
        None, description="vendor is who makes the model, from the accelerator catalogue."
    )
    resource_name: str | None = Field(
        None,
        max_length=253,
        description="resourceName is the extended resource the model's nodes advertise.",
    )
    fp16_tflops: int | None = Field(
        None,
        alias="fp16TFLOPS",
        ge=0,
        description="fp16TFLOPS is one device's dense FP16 throughput, in TFLOPS, from the "
        "catalogue; absent when the catalogue has no figure.",
    )


PFLOPS = Annotated[str, Field(pattern=PFLOPS_PATTERN, max_length=17)]


class MemberClusterStatus(ApiModel):
    """What the operator last saw of the member; written by the operator only."""

    observed_generation: int | None = Field(
        None,
        ge=0,
        description="observedGeneration is the metadata.generation the status reflects.",
    )
    gpus: list[GPUInventory] = Field(
        default_factory=list,
        max_length=MAX_PRICES,
        description="gpus counts the member's GPUs per model, at most 32 models.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["model"],
        },
    )
    total_gpus: int | None = Field(
        None,
        alias="totalGPUs",
        ge=0,
        description="totalGPUs is the sum of gpus[].total, in GPUs.",
    )
    free_gpus: int | None = Field(
        None,
        alias="freeGPUs",
        ge=0,
        description="freeGPUs is the sum of gpus[].free, in GPUs.",
    )
    total_pflops: PFLOPS | None = Field(
        None,
        alias="totalPFLOPS",
        description="totalPFLOPS is the dense FP16 throughput of all the member's devices of "
        'known figures, in PFLOPS with three decimals ("31.648").',
    )
    schedulable_pflops: PFLOPS | None = Field(
        None,
        alias="schedulablePFLOPS",
        description="schedulablePFLOPS is that of the devices on schedulable nodes, in PFLOPS.",
    )
    free_pflops: PFLOPS | None = Field(
        None,
        alias="freePFLOPS",
        description="freePFLOPS is that of the free devices (gpus[].free), in PFLOPS.",
    )
    utilization_percent: int | None = Field(
        None,
        ge=0,
        le=100,
        description="utilizationPercent is the mean utilization of all the member's GPUs, in "
        "percent, 0 to 100.",
    )
    last_heartbeat_time: Timestamp | None = Field(
        None,
        description="lastHeartbeatTime is when the member's API server last answered (RFC 3339).",
    )
    last_telemetry_time: Timestamp | None = Field(
        None,
        description="lastTelemetryTime is when a telemetry endpoint was last read (RFC 3339).",
    )
    conditions: list[Condition] = conditions_field(
        "conditions are Ready, Reachable and TelemetryFresh; see their reasons."
    )


class MemberCluster(ApiModel):
    """A GPU cluster joined to the hub, with its prices and live GPU inventory."""

    api_version: Literal["suanli.io/v1alpha1"] = Field(
        "suanli.io/v1alpha1", description="apiVersion is suanli.io/v1alpha1."
    )
    kind: Literal["MemberCluster"] = Field("MemberCluster", description="kind is MemberCluster.")
    metadata: ObjectMeta = Field(
        default_factory=ObjectMeta, description="metadata is the standard object metadata."
    )
    spec: MemberClusterSpec = Field(
        description="spec says how to reach the member and what it costs."
    )
    status: MemberClusterStatus = Field(
        default_factory=MemberClusterStatus,
        description="status is the member's observed state; written by the operator only.",
    )


KIND_INFO: Final = KindInfo(
    kind="MemberCluster",
    plural="memberclusters",
    scope="Cluster",
    short_names=("mc",),
    printer_columns=(
        PrinterColumn(
            "Ready",
            "string",
            '.status.conditions[?(@.type=="Ready")].status',
            "Whether the member takes new jobs.",
        ),
        PrinterColumn("Region", "string", ".spec.region", "Where the member is."),
        PrinterColumn("Free", "integer", ".status.freeGPUs", "GPUs free for new jobs."),
        PrinterColumn("Total", "integer", ".status.totalGPUs", "GPUs in the member."),
        PrinterColumn(
            "FreePFLOPS", "string", ".status.freePFLOPS", "Dense FP16 PFLOPS free for new jobs."
        ),
        PrinterColumn(
            "PFLOPS", "string", ".status.totalPFLOPS", "Dense FP16 PFLOPS in the member."
        ),
        AGE_COLUMN,
        PrinterColumn("Provider", "string", ".spec.provider", "Who runs it.", priority=1),
        PrinterColumn("Cordoned", "boolean", ".spec.cordoned", "No new jobs.", priority=1),
        PrinterColumn(
            "PodSecurity", "string", ".spec.podSecurityLevel", "Level it enforces.", priority=1
        ),
        PrinterColumn(
            "Utilization", "integer", ".status.utilizationPercent", "Mean GPU %.", priority=1
        ),
        PrinterColumn("Heartbeat", "date", ".status.lastHeartbeatTime", "Last answer.", priority=1),
    ),
)


def validate_membercluster(member: MemberCluster) -> list[FieldError]:
    """The rules of a MemberCluster that its schema cannot express.

    When the object carries a status (on update, the API server passes the stored one along),
    every GPU model the member reports must keep a price: removing the price of a model in use
    would leave its GPUs unpriceable.
    """
    spec = member.spec
    errors: list[FieldError] = []
    name = member.metadata.name
    if name is not None and not is_dns_label(name):
        errors.append(
            FieldError(
                "metadata.name",
                "must be a DNS-1123 label (lower-case letters, digits and '-', at most 63), "
                "because it is written into labels on the hub and the member",
            )
        )
    models = [price.gpu_model for price in spec.prices]
    errors += [
        FieldError(f"{error.path}.gpuModel", error.message)
        for error in duplicate_errors("spec.prices", models, "GPU model")
    ]
    errors += [
        FieldError(f"spec.prices[{index}].pricePerGPUHour", "must be greater than 0")
        for index, price in enumerate(spec.prices)
        if price.price_per_gpu_hour <= 0
    ]
    offered = [gpus.model for gpus in member.status.gpus if gpus.total > 0]
    errors += [
        FieldError(
            "spec.prices",
            f"no price for GPU model {model!r}, which the member offers (status.gpus); add an "
            f"entry with gpuModel {model!r}",
        )
        for model in offered
        if model not in models
    ]
    errors += [
        FieldError(f"{error.path}.model", error.message)
        for error in duplicate_errors(
            "spec.accelerators", [entry.model for entry in spec.accelerators], "model"
        )
    ]
    errors += duplicate_errors(
        "spec.telemetryEndpoints", spec.telemetry_endpoints, "telemetry endpoint"
    )
    errors += _allowed_resource_errors(spec)
    for index, url in enumerate(spec.telemetry_endpoints):
        problem = _url_problem(url)
        if problem:
            errors.append(FieldError(f"spec.telemetryEndpoints[{index}]", problem))
    return errors


def _allowed_resource_errors(spec: MemberClusterSpec) -> list[FieldError]:
    """An allowed resource may not be an accelerator (the pattern keeps core ones out: they
    have no domain)."""
    own = {spec.gpu_resource_name, *(entry.resource for entry in spec.accelerators)}
    errors = duplicate_errors("spec.allowedResources", spec.allowed_resources, "resource")
    for index, name in enumerate(spec.allowed_resources):
        path = f"spec.allowedResources[{index}]"
        if name in own or is_accelerator_resource(name):
            errors.append(
                FieldError(
                    path,
                    f"{name} is an accelerator resource: accelerators come from a job's "
                    "gpusPerReplica only, and are charged; remove it",
                )
            )
    errors += duplicate_errors("spec.inlineVolumeDrivers", spec.inline_volume_drivers, "CSI driver")
    return errors


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return f"not a valid URL: {error}"
    if parts.scheme not in ("http", "https"):
        return "must be an http or https URL"
    if not parts.hostname:
        return "must name a host"
    if port == 0:
        return "port must be between 1 and 65535"
    if parts.fragment and endpoint_node(url) is None:
        return "the fragment may only name the exporter's node, as #node=<node name>"
    return None


def endpoint_node(url: str) -> str | None:
    """The node a telemetry endpoint's ``#node=<name>`` fragment names, if it names one.

    Exporters such as Ascend's npu-exporter serve one node and do not say which in their series;
    the fragment tells the hub (it is never sent to the exporter).
    """
    fragment = urlsplit(url).fragment
    key, _, value = fragment.partition("=")
    return value if key == "node" and is_dns_subdomain(value) else None
