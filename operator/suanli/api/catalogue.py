"""The accelerator catalogue: per model, who makes it, how nodes show it, and what it computes.

suanli counts capacity and compares prices in PFLOPS of dense FP16 (the unit Shanghai's and
other cities' platforms count intelligent compute in), so it must know, for every accelerator
model a member offers, its dense FP16/BF16 tensor throughput and memory, which device-plugin
resource its nodes advertise, and which node labels name it. This module holds that table for
the common models (:data:`BUILT_IN`), each figure with the source it comes from, and the rules
that read a node's model from its labels (:func:`detect_model`).

Figures are dense (vendors often quote sparse, twice as much) and whole TFLOPS: the catalogue
answers "which models qualify" and "how much capacity", where a fraction of a TFLOPS does not
matter, and whole numbers keep every sum exact. A model whose vendor publishes no figure we
could verify carries ``None``: its devices are counted, but add no PFLOPS and never qualify for
a job that asks by capability, until an admin gives the figure.

A cluster admin extends or corrects the table without a release, per member, in
``MemberCluster.spec.accelerators`` (:meth:`Catalogue.with_entries`): an entry for a model
already here replaces it on that member, a new one adds it. Per member, because a member
declares what it offers (the same figure priced there, counted there, matched there), and the
member object already reaches every place that needs it: admission's pricing, dispatch and
status.

How nodes name their model, vendor by vendor (first rule that answers wins):

1. ``suanli.io/gpu-model``, set by the member's admin: any vendor, the escape hatch for
   devices whose plugin sets no model label (Cambricon, Hygon: we found no documented one).
2. NVIDIA GPU feature discovery's ``nvidia.com/gpu.product`` (``NVIDIA-H100-80GB-HBM3``),
   read by :mod:`suanli.api.gpu_models`.
3. Ascend Device Plugin's ``node.kubernetes.io/npu.chip.name`` (``910B3``; MindCluster
   documentation, "node label" table): a chip name starting with one of an entry's
   ``chip_prefixes`` names it (the longest prefix wins, so ``910B3`` is a 910B, ``910ProB`` a
   910).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Final

from suanli.api.accelerators import VENDOR_RESOURCES, Vendor
from suanli.api.gpu_models import MODEL_LABEL, PRODUCT_LABEL, canonical_model, parse_gpu_product
from suanli.api.membercluster import MemberCluster
from suanli.api.template_needs import MemberOffer

ASCEND_CHIP_LABEL: Final = "node.kubernetes.io/npu.chip.name"
"""Set by Ascend Device Plugin to the chip type (``910B3``, ``310P3``)."""
TFLOPS_PER_PFLOPS: Final = 1000


@dataclass(frozen=True)
class Accelerator:
    """One accelerator model.

    Attributes:
        model: the canonical short name jobs and prices use (``H100``, ``ASCEND910B``).
        vendor: who makes it.
        resource: the extended resource its device plugin advertises one device as.
        memory_gib: device memory, GiB.
        fp16_tflops: dense FP16/BF16 tensor throughput of one device, TFLOPS; None when no
            figure is known.
        source: where the figures come from.
        chip_prefixes: Ascend chip names (:data:`ASCEND_CHIP_LABEL`) that are this model.
    """

    model: str
    vendor: Vendor
    resource: str
    memory_gib: int
    fp16_tflops: int | None
    source: str
    chip_prefixes: tuple[str, ...] = field(default=())

    @property
    def pflops(self) -> Decimal | None:
        """One device's dense FP16 PFLOPS."""
        if self.fp16_tflops is None:
            return None
        return Decimal(self.fp16_tflops) / TFLOPS_PER_PFLOPS


_NVIDIA_H100: Final = (
    "NVIDIA H100 Tensor Core GPU datasheet (SXM: FP16 tensor 1,979 TFLOPS with sparsity)"
)
_NVIDIA_A100: Final = "NVIDIA A100 Tensor Core GPU datasheet (FP16 tensor 312 TFLOPS dense, 80 GB)"

BUILT_IN: Final[tuple[Accelerator, ...]] = (
    Accelerator("H100", Vendor.NVIDIA, "nvidia.com/gpu", 80, 989, _NVIDIA_H100 + ", 80 GB HBM3"),
    Accelerator(
        "H800",
        Vendor.NVIDIA,
        "nvidia.com/gpu",
        80,
        989,
        "NVIDIA H800 SXM product brief: the H100's compute with NVLink cut to 400 GB/s; "
        + _NVIDIA_H100,
    ),
    Accelerator(
        "H20",
        Vendor.NVIDIA,
        "nvidia.com/gpu",
        96,
        148,
        "NVIDIA HGX H20 product brief (FP16/BF16 tensor 148 TFLOPS dense, 96 GB HBM3)",
    ),
    Accelerator("A100", Vendor.NVIDIA, "nvidia.com/gpu", 80, 312, _NVIDIA_A100),
    Accelerator(
        "A800",
        Vendor.NVIDIA,
        "nvidia.com/gpu",
        80,
        312,
        "NVIDIA A800 product brief: the A100's compute with NVLink cut to 400 GB/s; "
        + _NVIDIA_A100,
    ),
    Accelerator(
        "L40S",
        Vendor.NVIDIA,
        "nvidia.com/gpu",
        48,
        362,
        "NVIDIA L40S datasheet (FP16 tensor 362.05 TFLOPS dense, 733 with sparsity; 48 GB GDDR6)",
    ),
    Accelerator(
        "4090",
        Vendor.NVIDIA,
        "nvidia.com/gpu",
        24,
        165,
        "NVIDIA Ada Lovelace architecture whitepaper, GeForce RTX 4090 (FP16 tensor with FP32 "
        "accumulate 165.2 TFLOPS dense; 330 with FP16 accumulate, the figure some sources "
        "quote; 24 GB GDDR6X)",
    ),
    Accelerator(
        "ASCEND910B",
        Vendor.HUAWEI,
        "huawei.com/Ascend910",
        64,
        320,
        "Huawei publishes no per-chip FP16 figure for the 910B; 320 TFLOPS and 64 GB HBM2e are "
        "the figures most often reported (sources range from 256 to 376 by variant): correct it "
        "per member in spec.accelerators",
        chip_prefixes=("910B",),
    ),
    Accelerator(
        "ASCEND910",
        Vendor.HUAWEI,
        "huawei.com/Ascend910",
        32,
        256,
        "Huawei, Ascend 910 launch and Hot Chips 31 (2019): 256 TFLOPS FP16, 32 GB HBM2",
        chip_prefixes=("910",),
    ),
    Accelerator(
        "MLU370-X8",
        Vendor.CAMBRICON,
        "cambricon.com/mlu",
        48,
        96,
        "Cambricon MLU370-X8 launch, 2022-03-21 (FP16 96 TFLOPS peak, 48 GB LPDDR5)",
    ),
    Accelerator(
        "Z100",
        Vendor.HYGON,
        "hygon.com/dcu",
        32,
        None,
        "Hygon DCU Z100 (32 GB HBM2); Hygon publishes no FP16 figure we could verify: give one "
        "per member in spec.accelerators",
    ),
)


@dataclass(frozen=True)
class Catalogue:
    """Accelerator models by canonical name; immutable, cheap to extend per member."""

    entries: Mapping[str, Accelerator]

    @classmethod
    def of(cls, accelerators: Iterable[Accelerator]) -> Catalogue:
        return cls({canonical_model(a.model): a for a in accelerators})

    def with_entries(self, accelerators: Iterable[Accelerator]) -> Catalogue:
        """This catalogue with ``accelerators`` added, replacing models of the same name."""
        extra = {canonical_model(a.model): a for a in accelerators}
        if not extra:
            return self
        return Catalogue({**self.entries, **extra})

    def get(self, model: str) -> Accelerator | None:
        return self.entries.get(canonical_model(model))

    def __iter__(self) -> Iterator[Accelerator]:
        return iter(self.entries.values())

    @cached_property
    def resources(self) -> frozenset[str]:
        """Every resource name some model here is advertised as."""
        return frozenset(a.resource for a in self.entries.values()) | frozenset(
            VENDOR_RESOURCES.values()
        )

    def resource_of(self, model: str | None, default: str) -> str:
        """The resource ``model``'s devices are requested by, ``default`` if not known."""
        entry = self.get(model) if model else None
        return entry.resource if entry is not None else default

    def pflops(self, model: str, devices: int) -> Decimal | None:
        """``devices`` of ``model`` in PFLOPS; None when the model has no figure."""
        entry = self.get(model)
        per_device = entry.pflops if entry is not None else None
        return None if per_device is None else per_device * devices

    def model_of_chip(self, chip: str) -> str | None:
        """The model an Ascend chip name (``910B3``) is, by the longest matching prefix."""
        chip = chip.strip().upper()
        best: tuple[int, str] | None = None
        for entry in self.entries.values():
            for prefix in entry.chip_prefixes:
                if chip.startswith(prefix.upper()) and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), entry.model)
        return None if best is None else canonical_model(best[1])

    def model_of_name(self, name: str) -> str | None:
        """The model an exporter's model name means: an NVIDIA product (``NVIDIA A800-SXM4-
        80GB``), an Ascend chip (``Ascend910B3``, ``910B3``) or a catalogue name."""
        if not name.strip():
            return None
        if self.get(name) is not None:
            return canonical_model(name)
        chip = name.strip().upper().removeprefix("ASCEND").strip("-_ ")
        by_chip = self.model_of_chip(chip) if chip else None
        if by_chip is not None:
            return by_chip
        product = parse_gpu_product(name)
        return product.model if product is not None else None


DEFAULT_CATALOGUE: Final = Catalogue.of(BUILT_IN)


def member_catalogue(member: MemberCluster, base: Catalogue = DEFAULT_CATALOGUE) -> Catalogue:
    """The catalogue as ``member`` sees it: the built-in one plus its ``spec.accelerators``."""
    return base.with_entries(
        Accelerator(
            model=canonical_model(entry.model),
            vendor=entry.vendor,
            resource=entry.resource,
            memory_gib=entry.memory_gib,
            fp16_tflops=entry.fp16_tflops,
            source=f"MemberCluster {member.metadata.name} spec.accelerators",
        )
        for entry in member.spec.accelerators
    )


def member_offer(member: MemberCluster, catalogue: Catalogue | None = None) -> MemberOffer:
    """What ``member`` offers a pod template besides GPUs (:mod:`suanli.api.template_needs`).

    Its accelerator resources are every resource its catalogue knows (built-in models and its
    own entries) and its ``gpuResourceName``: a template may ask for none of them.
    """
    spec = member.spec
    catalogue = catalogue or member_catalogue(member)
    return MemberOffer(
        allowed_resources=frozenset(spec.allowed_resources),
        accelerator_resources=catalogue.resources | {spec.gpu_resource_name},
        inline_volume_drivers=frozenset(spec.inline_volume_drivers),
    )


def format_pflops(value: Decimal) -> str:
    """PFLOPS as status carries them: three decimals, exact for whole TFLOPS."""
    return f"{value.quantize(Decimal('0.001'))}"


@dataclass(frozen=True)
class DetectedModel:
    """What a node's labels say about its accelerators."""

    model: str
    """Canonical short name."""
    label: tuple[str, str]
    """The (key, value) label that named it: pods are pinned to the model by it."""
    whole: bool = True
    """False for MIG slices and time-sliced replicas (see :mod:`suanli.api.gpu_models`)."""


def detect_model(labels: Mapping[str, str], catalogue: Catalogue) -> DetectedModel | None:
    """A node's accelerator model from its labels (see the module notes for the rules)."""
    explicit = labels.get(MODEL_LABEL, "").strip()
    if explicit:
        return DetectedModel(canonical_model(explicit), (MODEL_LABEL, explicit))
    product = labels.get(PRODUCT_LABEL, "")
    parsed = parse_gpu_product(product) if product else None
    if parsed is not None:
        return DetectedModel(parsed.model, (PRODUCT_LABEL, product), parsed.whole_gpus)
    chip = labels.get(ASCEND_CHIP_LABEL, "").strip()
    model = catalogue.model_of_chip(chip) if chip else None
    if model is not None:
        return DetectedModel(model, (ASCEND_CHIP_LABEL, chip))
    return None


def meets(
    entry: Accelerator | None,
    *,
    min_fp16_tflops: int | None,
    min_memory_gib: int | None,
    vendors: frozenset[str],
) -> bool:
    """Whether one device of ``entry`` satisfies a capability request (unknown never does)."""
    if entry is None:
        return False
    if vendors and entry.vendor.value not in vendors:
        return False
    if min_fp16_tflops is not None and (
        entry.fp16_tflops is None or entry.fp16_tflops < min_fp16_tflops
    ):
        return False
    return min_memory_gib is None or entry.memory_gib >= min_memory_gib
