"""GPU model names: from what nodes and exporters report to the short names ComputeJobs use.

Tenants, vouchers and price lists name GPUs the way people do: ``H100``, ``A800``, ``L40S``,
``4090``. Nodes say more: NVIDIA GPU feature discovery (GFD) labels a node
``nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3``, and dcgm-exporter reports the same GPU as
``modelName="NVIDIA H100 80GB HBM3"``. :func:`parse_gpu_product` finds the model token inside
such a string:

- The string is cut into tokens at ``-``, ``_``, ``/`` and white space, and upper-cased.
- The first token shaped like a data-centre model wins: a family letter (A, B, H, K, L, P, T, V,
  or GH/GB for the Grace superchips), one to four digits, and at most two suffix letters
  (``H100``, ``L40S``, ``A10G``, ``GH200``). Memory sizes (``80GB``), form factors (``SXM4``,
  ``PCIe``, ``NVL``) and memory kinds (``HBM3``) never have that shape.
- Consumer and workstation cards carry ``RTX`` before a bare number: with ``GeForce`` in the
  product the number is the name (``NVIDIA-GeForce-RTX-4090-D`` is ``4090D``; ``Ti`` and
  ``SUPER`` stick to it too), otherwise it is ``RTX<number>`` plus ``ADA`` for the Ada
  generation (``NVIDIA-RTX-6000-Ada-Generation`` is ``RTX6000ADA``).
- ``MIG`` in the product means GFD's MIG strategy renamed the node's GPUs into slices, and a
  trailing ``SHARED`` means time-slicing replicas; neither is a whole GPU, which is what a
  ComputeJob asks for, so capacity ignores such nodes (:attr:`GpuProduct.whole_gpus`).

Model names compare case-insensitively (:func:`canonical_model`): everything the dispatcher
keys by model is upper case. A node whose product this cannot read (another vendor, a new
naming scheme) can be named explicitly by its admin with the :data:`MODEL_LABEL` label, which
wins over the product label.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

PRODUCT_LABEL: Final = "nvidia.com/gpu.product"
"""GFD's node label with the full product name."""
COUNT_LABEL: Final = "nvidia.com/gpu.count"
MEMORY_LABEL: Final = "nvidia.com/gpu.memory"
MODEL_LABEL: Final = "suanli.io/gpu-model"
"""A node label a member's admin may set to the short model name; wins over the product label."""

_SPLIT: Final = re.compile(r"[-_/\s]+")
_DATACENTER: Final = re.compile(r"^(?:GH|GB|[ABHKLPTV])\d{1,4}[A-Z]{0,2}$")
_NUMBER: Final = re.compile(r"^\d{3,5}$")
_CONSUMER_SUFFIXES: Final = frozenset({"D", "TI", "SUPER"})


@dataclass(frozen=True)
class GpuProduct:
    """What a product string says about the GPUs it labels."""

    model: str
    """The short model name, upper case: ``H100``, ``L40S``, ``4090D``."""
    mig: bool = False
    """The resource counts MIG slices, not GPUs."""
    shared: bool = False
    """The resource counts time-slicing replicas, not GPUs."""

    @property
    def whole_gpus(self) -> bool:
        """Whether one unit of the node's GPU resource is one whole GPU."""
        return not (self.mig or self.shared)


def canonical_model(name: str) -> str:
    """The form model names are compared in: stripped and upper case (``l40s`` is ``L40S``)."""
    return name.strip().upper()


def parse_gpu_product(product: str) -> GpuProduct | None:
    """Read a GFD product label or a dcgm-exporter ``modelName``; ``None`` if no model is in it.

    >>> parse_gpu_product("NVIDIA-A800-SXM4-80GB")
    GpuProduct(model='A800', mig=False, shared=False)
    """
    tokens = [token.upper() for token in _SPLIT.split(product.strip()) if token]
    mig = "MIG" in tokens
    shared = bool(tokens) and tokens[-1] == "SHARED"
    model = _model_in(tokens)
    return None if model is None else GpuProduct(model=model, mig=mig, shared=shared)


def normalize_gpu_model(product: str) -> str | None:
    """The short model name inside ``product`` (``NVIDIA-H100-80GB-HBM3`` is ``H100``)."""
    parsed = parse_gpu_product(product)
    return None if parsed is None else parsed.model


def product_of_labels(labels: Mapping[str, str]) -> GpuProduct | None:
    """A node's GPU product from its labels: :data:`MODEL_LABEL` first, then GFD's product.

    The admin's explicit label is trusted as a whole-GPU model of that name; GFD's product is
    parsed, MIG and time-slicing markers included.
    """
    explicit = labels.get(MODEL_LABEL, "").strip()
    if explicit:
        return GpuProduct(model=canonical_model(explicit))
    product = labels.get(PRODUCT_LABEL, "")
    return parse_gpu_product(product) if product else None


def _model_in(tokens: list[str]) -> str | None:
    for position, token in enumerate(tokens):
        if _DATACENTER.fullmatch(token):
            return token
        following = tokens[position + 1] if position + 1 < len(tokens) else ""
        if token == "RTX" and _NUMBER.fullmatch(following):
            return _rtx_name(tokens, position + 1)
    return None


def _rtx_name(tokens: list[str], number_at: int) -> str:
    number = tokens[number_at]
    rest = tokens[number_at + 1 :]
    if "GEFORCE" in tokens[:number_at]:
        # GeForce variants are distinct cards (the 4090 D is China's export variant).
        suffix = "".join(token for token in rest[:2] if token in _CONSUMER_SUFFIXES)
        return number + suffix
    return f"RTX{number}" + ("ADA" if "ADA" in rest else "")
