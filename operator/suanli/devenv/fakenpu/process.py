"""The stand-in npu-exporter as a process: ``python -m suanli.devenv.fakenpu.process``.

:class:`FakeNpuExporter` starts it on a free loopback port serving a state file the caller
controls, waits until it answers and always stops it again, like
:class:`~suanli.devenv.fakenvml.exporter_process.FakeGpuExporter` for NVIDIA nodes. The state
file is read on every scrape, so :meth:`FakeNpuExporter.set_state` takes effect at once.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from suanli.devenv.fakenpu import FakeNpuState, read_state, render, write_state
from suanli.devenv.served_process import LOOPBACK, ServedProcess


class FakeNpuExporter(ServedProcess):
    """The stand-in npu-exporter for one Ascend node; use as a context manager.

    Args:
        workdir: Holds the state file and the log.
        state: The node's NPUs; change them later with :meth:`set_state`.
        node: The node's name (npu-exporter's series do not carry it: the hub learns it from
            the endpoint URL's ``#node=`` fragment, which :attr:`endpoint` includes).
    """

    what = "stand-in npu-exporter"

    def __init__(self, workdir: Path, state: FakeNpuState, *, node: str) -> None:
        super().__init__(workdir / f"{node}.npu-exporter.log")
        self.node = node
        self.state_path = workdir / f"{node}.npu.json"
        self._state = state

    @property
    def endpoint(self) -> str:
        """What a MemberCluster's spec.telemetryEndpoints lists for this exporter."""
        return f"{self.url}/metrics#node={self.node}"

    @property
    def state(self) -> FakeNpuState:
        return self._state

    def prepare(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        write_state(self.state_path, self._state)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "suanli.devenv.fakenpu.process",
            "--port",
            str(self.port),
            "--state",
            str(self.state_path),
        ]

    def answers(self) -> bool:
        return "npu_chip_info_utilization" in self.scrape(timeout=1.0)

    def set_state(self, state: FakeNpuState) -> None:
        self._state = state
        write_state(self.state_path, state)


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
