"""The stand-in npu-exporter as a process: ``python -m suanli.devenv.fakenpu.process``.

:class:`FakeNpuExporter` starts it on a free loopback port serving a state file the caller
controls, waits until it answers and always stops it again, like
:class:`~suanli.devenv.fakenvml.exporter_process.FakeGpuExporter` for NVIDIA nodes. The state
file is read on every scrape, so :meth:`FakeNpuExporter.set_state` takes effect at once.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from suanli.devenv.fakenpu import FakeNpuState, read_state, render, write_state
from suanli.devenv.fakenvml.exporter_process import LOOPBACK, free_port
from suanli.devenv.waiting import wait_for


class FakeNpuExporter:
    """The stand-in npu-exporter for one Ascend node; use as a context manager.

    Args:
        workdir: Holds the state file and the log.
        state: The node's NPUs; change them later with :meth:`set_state`.
        node: The node's name (npu-exporter's series do not carry it: the hub learns it from
            the endpoint URL's ``#node=`` fragment, which :attr:`endpoint` includes).
    """

    def __init__(self, workdir: Path, state: FakeNpuState, *, node: str) -> None:
        self.node = node
        self.state_path = workdir / f"{node}.npu.json"
        self.log_path = workdir / f"{node}.npu-exporter.log"
        self.port = free_port()
        self._state = state
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def endpoint(self) -> str:
        """What a MemberCluster's spec.telemetryEndpoints lists for this exporter."""
        return f"{self.url}/metrics#node={self.node}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the stand-in npu-exporter is not running")
        return self._process.pid

    @property
    def state(self) -> FakeNpuState:
        return self._state

    def start(self, timeout: float = 30.0) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        write_state(self.state_path, self._state)
        self._log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "suanli.devenv.fakenpu.process",
                "--port",
                str(self.port),
                "--state",
                str(self.state_path),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(self._answers, timeout=timeout, what=f"npu-exporter on port {self.port}")
        except BaseException:
            self.stop()
            raise

    def set_state(self, state: FakeNpuState) -> None:
        self._state = state
        write_state(self.state_path, state)

    def scrape(self, timeout: float = 5.0) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=timeout) as response:
            body: bytes = response.read()
            return body.decode()

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> FakeNpuExporter:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _answers(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            raise RuntimeError(f"the stand-in npu-exporter exited during start-up:\n{log}")
        try:
            return "npu_chip_info_utilization" in self.scrape(timeout=1.0)
        except OSError:
            return False


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """One line per scrape would drown the log."""


def serve(port: int, state_path: Path) -> None:
    """Serve ``/metrics`` from ``state_path`` on 127.0.0.1:``port`` until SIGTERM."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        body = render(read_state(state_path)).encode()
        start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4")])
        return [body]

    server = make_server(LOOPBACK, port, app, handler_class=_QuietHandler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="stand-in Ascend npu-exporter")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args(argv)
    serve(args.port, args.state)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
