"""A local HTTP server as a child process: on a free loopback port, waited for, always stopped.

The stand-in exporters (NVIDIA's through the stand-in libnvidia-ml, Ascend's npu-exporter) are
such processes: each is started with a state file the caller controls, is ready once it answers
as it should, logs to a file (nobody reads a pipe while it runs, and a full pipe would block
it), and is stopped with SIGTERM, then SIGKILL. :class:`ServedProcess` is that life once; a
subclass says what to run and what "answers" means.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import urllib.request
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar, Final, Self

from suanli.kits.waiting import wait_for

LOOPBACK: Final = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


class ServedProcess(ABC):
    """One server process on ``127.0.0.1:port``; use as a context manager."""

    what: ClassVar[str]
    """What it is, for messages."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"the {self.what} is not running")
        return self._process.pid

    @abstractmethod
    def command(self) -> list[str]:
        """The command line to run (after :meth:`prepare`)."""

    def environment(self) -> dict[str, str] | None:
        """The process's environment; None inherits this one."""
        return None

    @abstractmethod
    def prepare(self) -> None:
        """Make what must exist before the process starts (its state file)."""

    @abstractmethod
    def answers(self) -> bool:
        """Whether the started server answers as it should (asked until it does)."""

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until it answers; stop it again if it does not."""
        self.prepare()
        self._log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            self.command(),
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(self._ready, timeout=timeout, what=f"{self.what} on port {self.port}")
        except BaseException:
            self.stop()
            raise

    def scrape(self, path: str = "/metrics", timeout: float = 5.0) -> str:
        """GET ``path`` from the server and return the body."""
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

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _ready(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError(
                f"the {self.what} exited during start-up; its log ({self.log_path}):\n"
                + self.log_text()
            )
        try:
            return self.answers()
        except OSError:
            return False
