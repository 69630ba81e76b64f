"""The dispatcher's inputs: small immutable records the handlers build from API objects.

The capacity index and the policy never see a Kubernetes object or a pydantic model: they read
these records, so they can be tested and benchmarked without either. The constructors here
(``from_member``, ``from_voucher``, ``from_computejob``) are the one translation from the API
models; :mod:`suanli.dispatch.kube` translates member Nodes and Pods.

GPU model names are kept in canonical form (upper case, see
:func:`~suanli.api.gpu_models.canonical_model`) in every record, so comparisons are plain
set and dict operations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from suanli.api.catalogue import (
    DEFAULT_CATALOGUE,
    Accelerator,
    Catalogue,
    meets,
    member_catalogue,
    member_offer,
)
from suanli.api.common import ConditionStatus, find_condition
from suanli.api.computejob import ComputeJob, PlacementPolicy
from suanli.api.gpu_models import canonical_model
from suanli.api.membercluster import DEFAULT_GPU_RESOURCE, MemberCluster
from suanli.api.podpolicy import (
    DEFAULT_POD_SECURITY_LEVEL,
    PodSecurityLevel,
    level_errors,
    template_errors,
)
from suanli.api.reasons import MemberConditionType, MemberReason
from suanli.api.template_needs import (
    GPUS_ONLY,
    NOTHING_BEYOND_GPUS,
    MemberOffer,
    TemplateNeeds,
    template_needs,
)
from suanli.api.voucherquota import VoucherQuota
from suanli.vouchers.pricing import price_cap

# Ready=False for these reasons is not a reason for the dispatcher to skip a reachable member:
# it applies finer rules of its own (cordon switch, per-model prices, Kubernetes' view when
# telemetry is stale).
_READY_FALSE_HANDLED_HERE: Final = frozenset(
    {MemberReason.TELEMETRY_STALE, MemberReason.CORDONED, MemberReason.UNPRICED_GPU_MODELS}
)


def _models(names: Iterable[str]) -> frozenset[str]:
    return frozenset(canonical_model(name) for name in names)


@dataclass(frozen=True)
class ClusterInfo:
    """A member cluster as the dispatcher needs it: where, whether usable, at what prices."""

    name: str
    region: str
    prices: Mapping[str, Decimal]
    """Price per GPU-hour by canonical model; a model without a price gets no jobs."""
    currency: str = "CNY"
    ready: bool = True
    not_ready_message: str = ""
    """Why the member is not Ready, for the tenant; empty when it is."""
    cordoned: bool = False
    gpu_resource: str = DEFAULT_GPU_RESOURCE
    pod_security_level: PodSecurityLevel = DEFAULT_POD_SECURITY_LEVEL
    """The Pod Security Standards level the member requires of the pods it runs."""
    catalogue: Catalogue = DEFAULT_CATALOGUE
    """The accelerator catalogue as the member declares it (built-in plus its entries)."""
    offer: MemberOffer = NOTHING_BEYOND_GPUS
    """What the member runs in a template besides GPUs (extended resources, CSI drivers)."""

    @classmethod
    def from_member(cls, member: MemberCluster) -> ClusterInfo:
        """Read a MemberCluster: spec for region, prices and cordon, conditions for readiness.

        The member counts as Ready when its Ready condition is True, or when it is False only
        because of telemetry staleness, cordoning or an unpriced model while the API server is
        Reachable: the dispatcher handles those three itself, so a reachable member with stale
        telemetry still gets jobs, judged by Kubernetes' view of its GPUs.
        """
        name = member.metadata.name or ""
        conditions = member.status.conditions
        ready_condition = find_condition(conditions, MemberConditionType.READY)
        reachable = find_condition(conditions, MemberConditionType.REACHABLE)
        handled_here = (
            ready_condition is not None
            and ready_condition.status == ConditionStatus.FALSE
            and ready_condition.reason in _READY_FALSE_HANDLED_HERE
            and reachable is not None
            and reachable.status == ConditionStatus.TRUE
        )
        if ready_condition is None:
            ready, message = False, "not probed yet"
        elif ready_condition.status == ConditionStatus.TRUE or handled_here:
            ready, message = True, ""
        else:
            ready = False
            message = ready_condition.message or ready_condition.reason
        spec = member.spec
        catalogue = member_catalogue(member)
        return cls(
            name=name,
            region=spec.region,
            prices={canonical_model(p.gpu_model): p.price_per_gpu_hour for p in spec.prices},
            currency=spec.currency,
            ready=ready,
            not_ready_message=message,
            cordoned=spec.cordoned,
            gpu_resource=spec.gpu_resource_name,
            pod_security_level=spec.pod_security_level,
            catalogue=catalogue,
            offer=member_offer(member, catalogue),
        )


@dataclass(frozen=True)
class CapabilityRequest:
    """What each device must offer (``spec.capability``), whatever its model."""

    min_fp16_tflops: int | None = None
    min_memory_gib: int | None = None
    vendors: frozenset[str] = frozenset()

    def met_by(self, entry: Accelerator | None) -> bool:
        return meets(
            entry,
            min_fp16_tflops=self.min_fp16_tflops,
            min_memory_gib=self.min_memory_gib,
            vendors=self.vendors,
        )

    def __str__(self) -> str:
        parts = []
        if self.min_fp16_tflops is not None:
            parts.append(f">= {self.min_fp16_tflops} FP16 TFLOPS")
        if self.min_memory_gib is not None:
            parts.append(f">= {self.min_memory_gib} GiB")
        if self.vendors:
            parts.append("from " + " or ".join(sorted(self.vendors)))
        return ", ".join(parts)


@dataclass(frozen=True)
class VoucherTerms:
    """What a job's voucher allows: where it pays and in which currency."""

    name: str
    currency: str = "CNY"
    allowed_clusters: frozenset[str] = frozenset()
    """Empty allows every member."""
    allowed_models: frozenset[str] = frozenset()
    """Canonical model names; empty allows every model."""

    @classmethod
    def from_voucher(cls, voucher: VoucherQuota) -> VoucherTerms:
        spec = voucher.spec
        return cls(
            name=voucher.metadata.name or "",
            currency=spec.currency,
            allowed_clusters=frozenset(spec.allowed_clusters),
            allowed_models=_models(spec.allowed_gpu_models),
        )


@dataclass(frozen=True)
class JobRequest:
    """A ComputeJob reduced to what placement needs."""

    key: str
    """Stable identity for the assume cache and the queue; the ComputeJob's uid is best, as it
    is also a valid label value for the remote pods (see :data:`suanli.api.names.JOB_UID_LABEL`).
    """
    name: str
    """``namespace/name``, for messages."""
    tenant: str
    """Whose fair share the job counts against: the namespace."""
    replicas: int = 1
    gpus_per_replica: int = 1
    gpu_models: frozenset[str] = frozenset()
    """Canonical model names the job accepts; empty accepts any."""
    clusters: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()
    policy: PlacementPolicy = PlacementPolicy.CHEAPEST
    priority: int = 0
    submitted_at: float = 0.0
    """Epoch seconds; orders jobs of equal priority and tenant share."""
    voucher: VoucherTerms | None = field(default=None)
    price_cap: Decimal | None = None
    """The highest price per GPU-hour the job's hold covers (see
    :func:`~suanli.vouchers.pricing.price_cap`); a model priced above it is not chosen, so a
    job is never placed where its worst case would cost more than was reserved. None before
    the hold is recorded."""
    unmet_levels: tuple[tuple[PodSecurityLevel, str], ...] = ()
    """The Pod Security levels the job's template does not meet, each with the first field
    that falls short (for the tenant); members requiring one of these levels are passed over.
    A tuple, not a dict, so the record stays hashable."""
    capability: CapabilityRequest | None = None
    """What each device must offer; None when the job asks by model names only."""
    needs: TemplateNeeds = GPUS_ONLY
    """What the template asks of a member besides GPUs (extended resources, CSI drivers)."""

    @property
    def total_gpus(self) -> int:
        return self.replicas * self.gpus_per_replica

    def without(self, cluster: str, members: frozenset[str]) -> JobRequest | None:
        """The request with ``cluster`` taken out of the clusters it may run on (``members``
        when it names none); None when that leaves none."""
        remaining = (self.clusters or members) - {cluster}
        # An empty set would mean "anywhere": with nowhere else to go there is no request.
        return dataclasses.replace(self, clusters=remaining) if remaining else None

    def shortfall(self, level: PodSecurityLevel) -> str | None:
        """Why the template does not meet ``level`` (its first failing field), or None if it
        does."""
        return next((why for unmet, why in self.unmet_levels if unmet == level), None)

    @classmethod
    def from_computejob(
        cls,
        job: ComputeJob,
        voucher: VoucherQuota | VoucherTerms | None = None,
        *,
        key: str | None = None,
        submitted_at: float | None = None,
    ) -> JobRequest:
        """Read a ComputeJob; ``submitted_at`` defaults to its creationTimestamp."""
        meta = job.metadata
        namespace = meta.namespace or ""
        name = f"{namespace}/{meta.name or ''}"
        if submitted_at is None:
            created = meta.creation_timestamp
            submitted_at = created.timestamp() if created is not None else 0.0
        spec = job.spec
        terms = VoucherTerms.from_voucher(voucher) if isinstance(voucher, VoucherQuota) else voucher
        return cls(
            key=key or meta.uid or name,
            name=name,
            tenant=namespace,
            replicas=spec.replicas,
            gpus_per_replica=spec.gpus_per_replica,
            gpu_models=_models(spec.gpu_models),
            clusters=frozenset(spec.placement.clusters),
            regions=frozenset(spec.placement.regions),
            policy=spec.placement.policy,
            priority=spec.priority,
            submitted_at=submitted_at,
            voucher=terms,
            unmet_levels=unmet_levels(spec.template),
            needs=template_needs(spec.template),
            capability=(
                CapabilityRequest(
                    min_fp16_tflops=spec.capability.min_fp16_tflops,
                    min_memory_gib=spec.capability.min_memory_gib,
                    vendors=frozenset(v.value for v in spec.capability.vendors),
                )
                if spec.capability is not None and not spec.capability.empty
                else None
            ),
            price_cap=(
                price_cap(job.status.estimated_cost, spec.total_gpus, spec.max_runtime)
                if job.status.estimated_cost is not None
                else None
            ),
        )


def unmet_levels(template: Mapping[str, Any]) -> tuple[tuple[PodSecurityLevel, str], ...]:
    """Each Pod Security level ``template`` does not meet, with its first failing field.

    The hub's own policy counts towards every level: a job stored before that policy refused
    its template (an upgrade) meets none, so it is placed nowhere rather than run unchecked.
    """
    refused = template_errors(template)
    unmet: list[tuple[PodSecurityLevel, str]] = []
    for level in PodSecurityLevel:
        errors = refused or level_errors(template, level)
        if errors:
            unmet.append((level, str(errors[0])))
    return tuple(unmet)


@dataclass(frozen=True)
class NodeInfo:
    """A member's node as far as GPUs go."""

    name: str
    model: str | None
    """Canonical short model, or ``None`` when the labels do not say (telemetry may tell)."""
    allocatable: int
    """GPUs the kubelet offers to pods (``status.allocatable`` of the GPU resource)."""
    capacity: int | None = None
    """GPUs installed (``status.capacity``); defaults to ``allocatable``."""
    schedulable: bool = True
    """Ready, not cordoned, no lifecycle taint: new pods may land on it."""
    whole_gpus: bool = True
    """False when the GPU resource counts MIG slices or time-slicing replicas: such a node
    offers no whole GPUs, which is what ComputeJobs ask for, and is left out of capacity."""
    product: str = ""
    """The raw product label, for messages and to pin pods to the model."""
    model_label: str = ""
    """The raw ``suanli.io/gpu-model`` label, when the member's admin set one (it wins over the
    product label, and pods are then pinned by it)."""
    resource: str = DEFAULT_GPU_RESOURCE
    """The extended resource the node offers its devices as (``huawei.com/Ascend910``)."""
    model_by: tuple[str, str] | None = None
    """The (key, value) label its model was read from; pods are pinned to the model by it."""

    @property
    def total(self) -> int:
        return self.allocatable if self.capacity is None else self.capacity


@dataclass(frozen=True)
class PodInfo:
    """A member's pod as far as GPUs go."""

    uid: str
    node: str | None
    """``spec.nodeName``: None until the member's scheduler binds it."""
    gpus: int
    """GPUs requested (the pod's effective request of the member's GPU resource)."""
    terminal: bool = False
    """Succeeded or Failed: its GPUs are free again."""
    job: str | None = None
    """The :attr:`JobRequest.key` of the ComputeJob the pod runs for, if any."""

    @property
    def holds_gpus(self) -> bool:
        """Whether the pod's GPUs are taken on its node now."""
        return self.node is not None and not self.terminal and self.gpus > 0
