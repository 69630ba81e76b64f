"""What a local federation consists of: a hub and member clusters with simulated GPU nodes.

The default mirrors three computing centers with different hardware, so dispatch has a real
choice to make: member-a with 4 nodes x 8 H100, member-b with 2 nodes x 8 A800 and 2 nodes x 4
L40S, member-c with 2 nodes x 8 Huawei Ascend 910B (labelled and advertised as Ascend's device
plugin does). A YAML file of the same shape (see ``examples/dev/federation.yaml``) describes any
other layout.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from suanli.errors import UserFacingError

_DNS_LABEL: Final = r"^[a-z]([-a-z0-9]{0,30}[a-z0-9])?$"


class GPUModel(BaseModel):
    """An accelerator model as its vendor's software labels it on a node: NVIDIA GPU feature
    discovery's product label, or Ascend Device Plugin's chip name (``ascend_chip``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="name: short model name used in ComputeJobs, e.g. H100.")
    product: str = Field(
        "",
        description="product: the nvidia.com/gpu.product label value, e.g. "
        "NVIDIA-H100-80GB-HBM3 (NVIDIA models).",
    )
    ascend_chip: str = Field(
        "",
        description="ascend_chip: the node.kubernetes.io/npu.chip.name label value, e.g. 910B3 "
        "(Ascend models: the node advertises huawei.com/Ascend910 instead of nvidia.com/gpu).",
    )
    memory_mib: int = Field(gt=0, le=1_048_576, description="memory_mib: memory per GPU in MiB.")

    @property
    def ascend(self) -> bool:
        return bool(self.ascend_chip)


H100: Final = GPUModel(name="H100", product="NVIDIA-H100-80GB-HBM3", memory_mib=81559)
A800: Final = GPUModel(name="A800", product="NVIDIA-A800-SXM4-80GB", memory_mib=81920)
L40S: Final = GPUModel(name="L40S", product="NVIDIA-L40S", memory_mib=46068)
ASCEND910B: Final = GPUModel(name="ASCEND910B", ascend_chip="910B3", memory_mib=65536)


class NodePool(BaseModel):
    """``count`` identical GPU nodes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_DNS_LABEL, description="name: prefix of the node names.")
    count: int = Field(ge=1, le=1000, description="count: number of nodes in the pool.")
    gpus_per_node: int = Field(ge=0, le=16, description="gpus_per_node: GPUs on each node.")
    gpu: GPUModel


class ClusterSpec(BaseModel):
    """One control plane of the federation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_DNS_LABEL, description="name: cluster name, e.g. member-a.")
    region: str = Field(default="shanghai", max_length=63, description="region: topology region.")
    node_pools: tuple[NodePool, ...] = Field(default=(), max_length=32)

    @property
    def gpu_capacity(self) -> dict[str, int]:
        """GPUs per model name across all pools."""
        totals: dict[str, int] = {}
        for pool in self.node_pools:
            totals[pool.gpu.name] = totals.get(pool.gpu.name, 0) + pool.count * pool.gpus_per_node
        return totals


class FederationSpec(BaseModel):
    """A hub cluster (no GPU nodes) and its members."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hub: ClusterSpec = ClusterSpec(name="hub")
    members: tuple[ClusterSpec, ...] = Field(min_length=1, max_length=8)

    @field_validator("members")
    @classmethod
    def _unique_names(cls, members: tuple[ClusterSpec, ...]) -> tuple[ClusterSpec, ...]:
        names = [member.name for member in members]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates or "hub" in names:
            raise ValueError(f"member names must be unique and not 'hub': {duplicates or ['hub']}")
        return members

    @property
    def clusters(self) -> tuple[ClusterSpec, ...]:
        return (self.hub, *self.members)


DEFAULT_MEMBERS: Final = (
    ClusterSpec(
        name="member-a",
        region="shanghai-pudong",
        node_pools=(NodePool(name="h100", count=4, gpus_per_node=8, gpu=H100),),
    ),
    ClusterSpec(
        name="member-b",
        region="shanghai-lingang",
        node_pools=(
            NodePool(name="a800", count=2, gpus_per_node=8, gpu=A800),
            NodePool(name="l40s", count=2, gpus_per_node=4, gpu=L40S),
        ),
    ),
    ClusterSpec(
        name="member-c",
        region="shanghai-minhang",
        node_pools=(NodePool(name="ascend910b", count=2, gpus_per_node=8, gpu=ASCEND910B),),
    ),
)
DEFAULT_MEMBER_COUNT: Final = 3
"""`suanli dev up` starts all three (the e2e suite uses the first two)."""


def default_federation(members: int = DEFAULT_MEMBER_COUNT) -> FederationSpec:
    """The built-in layout with the first ``members`` member clusters (1 to 3)."""
    if not 1 <= members <= len(DEFAULT_MEMBERS):
        raise UserFacingError(
            f"--members must be between 1 and {len(DEFAULT_MEMBERS)} for the built-in layout "
            f"(got {members}); describe larger federations in a --config file."
        )
    return FederationSpec(members=DEFAULT_MEMBERS[:members])


def load_federation(path: Path) -> FederationSpec:
    """Read a federation layout from YAML, with errors that name the offending field."""
    try:
        document = yaml.safe_load(path.read_text())
        return FederationSpec.model_validate(document)
    except OSError as error:
        raise UserFacingError(f"cannot read federation config {path}: {error}") from error
    except yaml.YAMLError as error:
        raise UserFacingError(f"{path} is not valid YAML: {error}") from error
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc'])) or '(top level)'}: {item['msg']}"
            for item in error.errors()
        )
        raise UserFacingError(f"{path}: {problems}") from error


def node_name(cluster: ClusterSpec, pool: NodePool, index: int) -> str:
    """Stable node names, e.g. member-a-h100-0."""
    return re.sub(r"-+", "-", f"{cluster.name}-{pool.name}-{index}")
