"""The operator as a local process against a hub: for `suanli dev up`, e2e tests, benchmarks.

A process (not Kopf's in-process runner) so tests can stop, kill and restart it exactly as an
outage would, and so the API server calls its webhook over real HTTPS.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from suanli.devenv.providers import is_alive, terminate
from suanli.errors import UserFacingError
from suanli.kits.waiting import wait_for
from suanli.options import OperatorOptions


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


PID_FILE = "operator.pid"


def _tied_to_parent(command: list[str]) -> list[str]:
    """``command`` run so that Linux sends it SIGTERM when this process dies.

    A test session killed by a timeout runs no clean-up; its operator must not run on
    against a federation that is being torn down. util-linux's setpriv sets the parent-death
    signal before exec; without it (not Linux), the caller's own clean-up has to do.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", *command] if setpriv else command


def stop_detached(workdir: Path, grace_seconds: float = 15.0) -> bool:
    """Stop an operator started with ``detached=True`` in ``workdir``; False if none ran."""
    pid_file = workdir / PID_FILE
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return False
    pid_file.unlink(missing_ok=True)
    if not _is_operator_of(pid, workdir):
        # It died (killed, crashed, the machine rebooted) and its pid may since belong to
        # another program, which must not be signalled.
        return False
    terminate([pid], grace_seconds)
    return True


def _is_operator_of(pid: int, workdir: Path) -> bool:
    """Whether ``pid`` is a live `suanli run` started in ``workdir`` (its certificate directory
    is on its command line)."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return is_alive(pid) and str(workdir / "certs").encode() in arguments


# The webhook configurations `suanli run` manages by default, as this module starts it.
WEBHOOK_CONFIGURATION = OperatorOptions().managed_webhook_config or ""


class OperatorProcess:
    """Start, stop and kill one `suanli run` process; its log goes to ``log_path``."""

    START_TIMEOUT = 60.0
    # Taking over from a leader that died (SIGKILL) waits for its Lease to expire and then out
    # the webhook timeout (30 s in the configurations `suanli run` manages).
    TAKEOVER_TIMEOUT = 120.0

    def __init__(
        self, kubeconfig: str, workdir: Path, *extra_args: str, detached: bool = False
    ) -> None:
        """``detached``: the process outlives this one (for `suanli dev up`); its pid is kept
        in ``workdir/operator.pid`` for :func:`stop_detached`."""
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.extra_args = extra_args
        self.detached = detached
        self.webhook_port = free_port()
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.log_path = workdir / "operator.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, admitting: bool = True) -> None:
        """Start the process; return once it admits ComputeJobs (it leads, with its ledgers
        rebuilt), or with ``admitting=False`` once it is live (e.g. a replica standing by)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        command = [
            sys.executable,
            "-m",
            "suanli",
            "run",
            "--kubeconfig",
            self.kubeconfig,
            "--webhook-port",
            str(self.webhook_port),
            # The same certificate across restarts, as a Secret would give a pod.
            "--webhook-cert-dir",
            str(self.workdir / "certs"),
            "--liveness",
            f"http://127.0.0.1:{self.health_port}/healthz",
            "--metrics-port",
            str(self.metrics_port),
            *self.extra_args,
        ]
        # setpriv execs in place, so the pid (and kill/stop) stays the operator's own.
        self.process = subprocess.Popen(
            command if self.detached else _tied_to_parent(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=self.detached,
        )
        if self.detached:
            (self.workdir / PID_FILE).write_text(str(self.process.pid))
        wait_for(self._healthy, timeout=self.START_TIMEOUT, what="the operator to be live")
        if admitting:
            self.wait_admitting()

    def wait_admitting(self, timeout: float | None = None) -> None:
        """Wait until this process admits ComputeJobs."""
        wait_for(
            lambda: self._probe("/admitting"),
            timeout=timeout or self.TAKEOVER_TIMEOUT,
            what="the operator to admit",
        )

    @property
    def admitting(self) -> bool:
        """Whether this process admits ComputeJobs now."""
        return self._probe("/admitting")

    def _healthy(self) -> bool:
        return self._probe("/healthz")

    def _probe(self, path: str) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise UserFacingError(
                f"the operator exited ({self.process.returncode}) while starting; "
                f"its log ({self.log_path}) ends:\n{self.log(tail=3000)}"
            )
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}{path}", timeout=1
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def wait_webhooks(self, api: client.ApiClient, timeout: float) -> None:
        """Wait until the hub calls this process's webhooks.

        After an operator died, its webhook configurations still name its port; they fail
        closed, so every write of a suanli object is refused until the new process has
        registered its own address.
        """
        admission = client.AdmissionregistrationV1Api(api)
        port = f":{self.webhook_port}/"

        def registered() -> bool:
            try:
                configurations = [
                    admission.read_validating_webhook_configuration(WEBHOOK_CONFIGURATION),
                    admission.read_mutating_webhook_configuration(WEBHOOK_CONFIGURATION),
                ]
            except ApiException as error:
                if error.status == 404:
                    return False
                raise
            return all(
                port in (webhook.client_config.url or "")
                for configuration in configurations
                for webhook in configuration.webhooks or []
            )

        wait_for(registered, timeout=timeout, what="the operator to register its webhooks")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Graceful stop (SIGTERM), as a rollout would."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: no clean-up handler runs."""
        self._end(signal.SIGKILL)

    def _end(self, how: signal.Signals) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(how)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log(self, tail: int | None = 6000) -> str:
        """The process's log, the last ``tail`` characters (all of it with None)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text if tail is None else text[-tail:]
