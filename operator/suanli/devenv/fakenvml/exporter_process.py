"""A GPU node without a GPU: ``suanli exporter`` as a child process on the stand-in library.

Tests, the scrape benchmark and the local federation all need the same thing: an exporter
process that loads libnvidia-ml.so.1 the way it would on a node, reads GPUs from a state file
the caller controls, listens on 127.0.0.1 on a free port, and is always stopped again.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Final

from suanli.devenv.fakenvml import FakeNvmlState, build_library, nvml_environment, write_state
from suanli.devenv.waiting import wait_for

LOOPBACK: Final = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


class FakeGpuExporter:
    """``suanli exporter`` serving a stand-in node; use as a context manager.

    Args:
        workdir: Holds the state file and the exporter's log.
        state: The GPUs the node starts with; change them later with :meth:`set_state`.
        hostname: The node name, the exporter's ``Hostname`` label.
        extra_args: More ``suanli exporter`` options, e.g. ``("--cache-seconds", "0")``.
        library: A built stand-in library; built (or found in the cache) if None.
    """

    def __init__(
        self,
        workdir: Path,
        state: FakeNvmlState,
        *,
        hostname: str = "fake-gpu-node",
        extra_args: Sequence[str] = (),
        library: Path | None = None,
    ) -> None:
        self.hostname = hostname
        self.state_path = workdir / f"{hostname}.nvml.json"
        self.log_path = workdir / f"{hostname}.exporter.log"
        self.port = free_port()
        self._state = state
        self._extra_args = tuple(extra_args)
        self._library = library
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the exporter is not running")
        return self._process.pid

    @property
    def state(self) -> FakeNvmlState:
        return self._state

    def start(self, timeout: float = 30.0) -> None:
        """Start the exporter and wait until /healthz answers."""
        library = self._library or build_library()
        write_state(self.state_path, self._state)
        # A file, not a pipe: nobody reads the log while the exporter runs, and a full pipe
        # would block it.
        self._log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            [
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
            ],
            env=nvml_environment(library, self.state_path),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(self._healthy, timeout=timeout, what=f"exporter on port {self.port}")
        except BaseException:
            self.stop()
            raise

    def set_state(self, state: FakeNvmlState) -> None:
        """Replace the node's GPUs; the running exporter sees them on its next NVML read."""
        self._state = state
        write_state(self.state_path, state)

    def scrape(self, path: str = "/metrics", timeout: float = 5.0) -> str:
        """GET ``path`` from the exporter and return the body."""
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            body: bytes = response.read()
            return body.decode()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop with SIGTERM (SIGKILL after ``timeout``); returns the exit status."""
        process, self._process = self._process, None
        status: int | None = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout)
            status = process.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return status

    def __enter__(self) -> FakeGpuExporter:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _healthy(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError(
                f"the exporter exited during start-up; its log ({self.log_path}):\n"
                + self.log_text()
            )
        try:
            return self.scrape("/healthz", timeout=1.0).strip() == "ok"
        except OSError:
            return False
