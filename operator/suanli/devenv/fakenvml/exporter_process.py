"""A GPU node without a GPU: ``suanli exporter`` as a child process on the stand-in library.

Tests, the scrape benchmark and the local federation all need the same thing: an exporter
process that loads libnvidia-ml.so.1 the way it would on a node, reads GPUs from a state file
the caller controls, listens on 127.0.0.1 on a free port, and is always stopped again.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from suanli.devenv.fakenvml import FakeNvmlState, build_library, nvml_environment, write_state
from suanli.devenv.served_process import LOOPBACK, ServedProcess, free_port

__all__ = ["LOOPBACK", "FakeGpuExporter", "free_port"]


class FakeGpuExporter(ServedProcess):
    """``suanli exporter`` serving a stand-in node; use as a context manager.

    Args:
        workdir: Holds the state file and the exporter's log.
        state: The GPUs the node starts with; change them later with :meth:`set_state`.
        hostname: The node name, the exporter's ``Hostname`` label.
        extra_args: More ``suanli exporter`` options, e.g. ``("--cache-seconds", "0")``.
        library: A built stand-in library; built (or found in the cache) if None.
    """

    what = "exporter"

    def __init__(
        self,
        workdir: Path,
        state: FakeNvmlState,
        *,
        hostname: str = "fake-gpu-node",
        extra_args: Sequence[str] = (),
        library: Path | None = None,
    ) -> None:
        super().__init__(workdir / f"{hostname}.exporter.log")
        self.hostname = hostname
        self.state_path = workdir / f"{hostname}.nvml.json"
        self._state = state
        self._extra_args = tuple(extra_args)
        self._library = library

    @property
    def state(self) -> FakeNvmlState:
        return self._state

    def prepare(self) -> None:
        self._library = self._library or build_library()
        write_state(self.state_path, self._state)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "suanli",
            "exporter",
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--hostname",
            self.hostname,
            *self._extra_args,
        ]

    def environment(self) -> dict[str, str]:
        assert self._library is not None  # built by prepare()
        return nvml_environment(self._library, self.state_path)

    def answers(self) -> bool:
        return self.scrape("/healthz", timeout=1.0).strip() == "ok"

    def set_state(self, state: FakeNvmlState) -> None:
        """Replace the node's GPUs; the running exporter sees them on its next NVML read."""
        self._state = state
        write_state(self.state_path, state)
