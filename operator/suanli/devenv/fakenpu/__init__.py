"""A stand-in for Ascend's npu-exporter: an Ascend node's NPUs served as npu-exporter serves them.

There is no Ascend device here, and npu-exporter needs Ascend's driver (DCMI). What the hub
reads from it is Prometheus text with npu-exporter's metric names and labels (MindCluster
documentation, "Prometheus Metrics接口"): per chip ``npu_chip_info_utilization`` (%),
``npu_chip_info_hbm_used_memory`` and ``..._hbm_total_memory`` (MB), ``..._health_status``
(1 healthy), ``..._temperature`` and ``..._power``, labelled ``id``, ``model_name``,
``vdie_id``, ``pcie_bus_info``, ``pod_name``, ``namespace``, ``container_name``, and no node
label. This serves exactly that, from a JSON state file the caller controls (as the stand-in
libnvidia-ml does for NVIDIA nodes), so the hub's reader is exercised on the real format over
real HTTP. :func:`render` is the format; :mod:`.process` runs it as a process.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Final

_NAMESPACE: Final = uuid.UUID("6f1b3a52-0c57-4f37-9a8e-3c2f8d0b5a17")
_HBM_910B_MB: Final = 65536


@dataclass(frozen=True)
class FakeNpu:
    """One stand-in NPU."""

    id: int
    vdie_id: str
    model_name: str = "Ascend910B3"
    utilization: int = 0
    hbm_total_mb: int = _HBM_910B_MB
    hbm_used_mb: int = 0
    healthy: bool = True
    temperature: int = 40
    power: float = 90.0


@dataclass(frozen=True)
class FakeNpuState:
    npus: tuple[FakeNpu, ...]

    def busy(self) -> FakeNpuState:
        """Every NPU in use (outside Kubernetes' knowledge): utilization and HBM high."""
        return FakeNpuState(
            tuple(
                replace(n, utilization=95, hbm_used_mb=int(n.hbm_total_mb * 0.9)) for n in self.npus
            )
        )

    def idle(self) -> FakeNpuState:
        return FakeNpuState(tuple(replace(n, utilization=0, hbm_used_mb=0) for n in self.npus))


def sample_npus(count: int, *, seed: str = "node", model_name: str = "Ascend910B3") -> FakeNpuState:
    """``count`` idle NPUs with die ids stable for a given ``seed`` (e.g. the node name)."""
    return FakeNpuState(
        tuple(
            FakeNpu(
                id=i,
                vdie_id=str(uuid.uuid5(_NAMESPACE, f"{seed}/{i}")).upper(),
                model_name=model_name,
            )
            for i in range(count)
        )
    )


def write_state(path: Path, state: FakeNpuState) -> None:
    """Write atomically: the server never reads half a file."""
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps({"npus": [asdict(n) for n in state.npus]}))
    scratch.replace(path)


def read_state(path: Path) -> FakeNpuState:
    document = json.loads(path.read_text())
    return FakeNpuState(tuple(FakeNpu(**entry) for entry in document["npus"]))


_FAMILIES: Final = (
    ("npu_chip_info_utilization", "the ai core utilization"),
    ("npu_chip_info_hbm_used_memory", "the npu hbm used memory, unit is 'MB'"),
    ("npu_chip_info_hbm_total_memory", "the npu hbm total memory, unit is 'MB'"),
    ("npu_chip_info_health_status", "the npu health status, 1 is healthy, 0 is unhealthy"),
    ("npu_chip_info_temperature", "the npu temperature, unit is 'celsius'"),
    ("npu_chip_info_power", "the npu power, unit is 'W'"),
)


def _value(npu: FakeNpu, family: str) -> float:
    return {
        "npu_chip_info_utilization": npu.utilization,
        "npu_chip_info_hbm_used_memory": npu.hbm_used_mb,
        "npu_chip_info_hbm_total_memory": npu.hbm_total_mb,
        "npu_chip_info_health_status": 1 if npu.healthy else 0,
        "npu_chip_info_temperature": npu.temperature,
        "npu_chip_info_power": npu.power,
    }[family]


def render(state: FakeNpuState, now: float | None = None) -> str:
    """The state as npu-exporter's Prometheus text, with its millisecond sample timestamps."""
    stamp = int((time.time() if now is None else now) * 1000)
    lines = [
        "# HELP machine_npu_nums Amount of npu installed on the machine.",
        "# TYPE machine_npu_nums gauge",
        f"machine_npu_nums {len(state.npus)}",
    ]
    for family, help_text in _FAMILIES:
        lines += [f"# HELP {family} {help_text}", f"# TYPE {family} gauge"]
        for npu in state.npus:
            labels = (
                f'container_name="",id="{npu.id}",model_name="{npu.model_name}",namespace="",'
                f'pcie_bus_info="0000:{0xC1 + npu.id:02X}:00.0",pod_name="",'
                f'vdie_id="{npu.vdie_id}"'
            )
            value = _value(npu, family)
            text = str(int(value)) if float(value).is_integer() else str(value)
            lines.append(f"{family}{{{labels}}} {text} {stamp}")
    return "\n".join(lines) + "\n"
