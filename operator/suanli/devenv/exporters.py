"""Stand-in exporters for a local federation: live telemetry from every simulated GPU node.

kwok's nodes have no devices, so without exporters every placement would be judged by
Kubernetes' view alone. ``suanli dev up`` therefore starts, for every node of every pool, the
exporter a real node would run, on stand-ins for the vendor's driver: ``suanli exporter`` on the
stand-in libnvidia-ml for NVIDIA nodes (dcgm-exporter's format), and the stand-in npu-exporter
for Ascend nodes. Each MemberCluster lists its exporters in ``spec.telemetryEndpoints``, so the
hub reads fresh telemetry from the start. The exporters outlive the command (their pids are kept
in the federation's directory) and ``suanli dev down`` stops them.

The devices start idle; to make some look busy, edit a node's state file (``<node>.nvml.json``,
``<node>.npu.json`` in the same directory) and the exporter reports it on its next read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from suanli.devenv.fakenpu import sample_npus
from suanli.devenv.fakenpu.process import FakeNpuExporter
from suanli.devenv.fakenvml import FakeNvmlState, build_library, sample_gpus
from suanli.devenv.fakenvml.exporter_process import FakeGpuExporter
from suanli.devenv.providers import terminate
from suanli.devenv.topology import ClusterSpec, node_name

PID_FILE: Final = "exporters.pids"
# Names as NVML reports them (dcgm-exporter's modelName), for the stand-in library.
_NVML_NAMES: Final = {
    "H100": "NVIDIA H100 80GB HBM3",
    "A800": "NVIDIA A800-SXM4-80GB",
    "L40S": "NVIDIA L40S",
}


def start_exporters(members: tuple[ClusterSpec, ...], workdir: Path) -> dict[str, list[str]]:
    """Start one stand-in exporter per node; the endpoints each member should list."""
    stop_exporters(workdir)  # `up` again restarts them
    workdir.mkdir(parents=True, exist_ok=True)
    library = None
    endpoints: dict[str, list[str]] = {}
    pids: list[int] = []
    for member in members:
        for pool in member.node_pools:
            for index in range(pool.count):
                node = node_name(member, pool, index)
                if pool.gpu.ascend:
                    npu = FakeNpuExporter(
                        workdir, sample_npus(pool.gpus_per_node, seed=node), node=node
                    )
                    npu.start()
                    pid, endpoint = npu.pid, npu.endpoint
                else:
                    library = library or build_library()
                    name = _NVML_NAMES.get(pool.gpu.name, pool.gpu.product.replace("-", " "))
                    state = FakeNvmlState(
                        gpus=sample_gpus(pool.gpus_per_node, seed=node, name=name)
                    )
                    gpu = FakeGpuExporter(workdir, state, hostname=node, library=library)
                    gpu.start()
                    pid, endpoint = gpu.pid, f"{gpu.url}/metrics"
                pids.append(pid)
                (workdir / PID_FILE).write_text("\n".join(map(str, pids)) + "\n")
                endpoints.setdefault(member.name, []).append(endpoint)
    return endpoints


def stop_exporters(workdir: Path, grace_seconds: float = 10.0) -> int:
    """Stop the exporters a previous `up` started; how many there were."""
    pid_file = workdir / PID_FILE
    try:
        pids = [int(line) for line in pid_file.read_text().split()]
    except (OSError, ValueError):
        return 0
    terminate(pids, grace_seconds)
    pid_file.unlink(missing_ok=True)
    return len(pids)
