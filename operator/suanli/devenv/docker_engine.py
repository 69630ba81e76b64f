"""The Docker engine the kind provider runs on: the one already running, or Debian's, started here.

kind needs a container engine. Where one answers (``DOCKER_HOST``, or the default socket) it is
used as it is and never reconfigured: that is a user's laptop or a hosted CI runner. Where none
answers, ``dockerd`` from Debian's ``docker.io`` is started with a configuration of our own:
its socket, data and state live under ``<cache>/docker/`` (so the images built for kind persist
between runs and warm runs reuse them), and every ``docker`` and ``kind`` command gets
``DOCKER_HOST`` pointing at that socket. ``suanli dev down`` stops the engine again, but only
the one it started, and only when no other kind federation still uses it.

One machine-specific workaround, applied only when detected: where the capability bounding set
lacks CAP_SYS_RESOURCE (as on this project's development machines), ``docker run --privileged``
fails with "unable to apply caps: operation not permitted", because a privileged container asks
for every capability. A small wrapper (``kindnode/runc-drop-caps``) registered as dockerd's
default runtime removes that capability from each container's OCI spec before the real runc
runs. kind's node containers (privileged, systemd inside) then start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

from suanli.devenv.toolchain import cache_root
from suanli.errors import UserFacingError

Log = Callable[[str], None]

# Linux capability numbers (include/uapi/linux/capability.h).
CAP_SYS_RESOURCE: Final = 24
START_TIMEOUT_SECONDS: Final = 90.0
STOP_TIMEOUT_SECONDS: Final = 60.0
RUNTIME_NAME: Final = "suanli-runc"


def engine_dir() -> Path:
    """Where an engine started by suanli keeps its socket, configuration, data and log."""
    return cache_root() / "docker"


def lacks_capability(capability: int, status: Path = Path("/proc/self/status")) -> bool:
    """Whether this machine's capability bounding set lacks ``capability``.

    dockerd runs with the same bounding set as this process, so a capability missing here is
    one no container can be given.
    """
    for line in status.read_text().splitlines():
        if line.startswith("CapBnd:"):
            return not (int(line.split()[1], 16) >> capability) & 1
    return False


@dataclass(frozen=True)
class DockerEngine:
    """A running engine: the environment that points ``docker`` and ``kind`` at it."""

    host: str  # a DOCKER_HOST value; "" for the client's default
    started_here: bool  # started by suanli (and so stopped by it)
    docker: str  # the docker client binary

    @property
    def env(self) -> dict[str, str]:
        environment = dict(os.environ)
        if self.host:
            environment["DOCKER_HOST"] = self.host
        # Docker 20.10's engine with a newer client: the classic builder needs no buildx plugin.
        environment.setdefault("DOCKER_BUILDKIT", "0")
        return environment

    def run(
        self,
        *args: str,
        what: str,
        timeout: float = 600.0,
        stdin: bytes | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a docker command; raise a UserFacingError with its output's tail when it fails."""
        return run_command(
            [self.docker, *args], env=self.env, what=what, timeout=timeout, stdin=stdin, check=check
        )

    def image_exists(self, reference: str) -> bool:
        result = self.run("image", "inspect", reference, what="docker image inspect", check=False)
        return result.returncode == 0


def run_command(
    command: Sequence[str],
    *,
    env: dict[str, str],
    what: str,
    timeout: float,
    stdin: bytes | None = None,
    check: bool = True,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """A bounded subprocess whose failure names the step and shows the end of its output."""
    try:
        result = subprocess.run(
            list(command),
            env=env,
            input=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as error:
        raise UserFacingError(f"{what} did not finish within {timeout:.0f}s") from error
    except FileNotFoundError as error:
        raise UserFacingError(f"{what}: {command[0]} is not installed") from error
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace").strip()
        tail = "\n".join(output.splitlines()[-25:])
        raise UserFacingError(f"{what} failed (exit {result.returncode}):\n{tail}")
    return result


def _docker_client() -> str:
    docker = shutil.which("docker")
    if docker is None:
        raise UserFacingError(
            "the kind provider needs Docker: install Debian's engine with "
            "`apt-get install docker.io` (or Docker from docker.com), then run again"
        )
    return docker


def _answers(docker: str, host: str) -> bool:
    env = dict(os.environ)
    if host:
        env["DOCKER_HOST"] = host
    try:
        result = subprocess.run(
            [docker, "version", "--format", "{{.Server.Version}}"],
            env=env,
            capture_output=True,
            timeout=15,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def _own_socket() -> Path:
    return engine_dir() / "docker.sock"


def find_engine() -> DockerEngine | None:
    """An engine that answers now, without starting one."""
    docker = _docker_client()
    own = f"unix://{_own_socket()}"
    if _pid() is not None and _answers(docker, own):
        return DockerEngine(own, started_here=True, docker=docker)
    if _answers(docker, os.environ.get("DOCKER_HOST", "")):
        return DockerEngine(os.environ.get("DOCKER_HOST", ""), started_here=False, docker=docker)
    return None


def dockerd_path() -> str | None:
    """Where Debian's (or any) dockerd is installed; None when it is not."""
    return shutil.which("dockerd") or next(
        (p for p in ("/usr/sbin/dockerd", "/usr/bin/dockerd") if Path(p).exists()), None
    )


def ensure_engine(log: Log) -> DockerEngine:
    """The engine that runs, or Debian's dockerd started now (bounded by a timeout)."""
    found = find_engine()
    if found is not None:
        where = "started by suanli" if found.started_here else (found.host or "default socket")
        log(f"docker engine: using the running one ({where})")
        if not found.started_here and lacks_capability(CAP_SYS_RESOURCE):
            # A user's engine is never reconfigured; say what will fail, and why.
            log(
                "docker engine: warning: this machine lacks CAP_SYS_RESOURCE, so privileged "
                "containers (kind's nodes) fail on an engine that runs runc directly; stop it "
                "and let suanli start Debian's dockerd with its runc wrapper"
            )
        return found
    dockerd = dockerd_path()
    if dockerd is None:
        raise UserFacingError(
            "no Docker engine answers and dockerd is not installed: "
            "`apt-get install docker.io` (Debian) provides it; or point DOCKER_HOST at an engine"
        )
    return _start(dockerd, _docker_client(), log)


def _daemon_config(directory: Path) -> dict[str, object]:
    config: dict[str, object] = {
        "hosts": [f"unix://{_own_socket()}"],
        "data-root": str(directory / "data"),
        # exec-root holds unix sockets, whose paths must stay short (108 bytes): under /run,
        # named after the cache directory so that each cache has its own.
        "exec-root": f"/run/suanli-docker-{hashlib.sha256(bytes(directory)).hexdigest()[:8]}",
        "pidfile": str(directory / "dockerd.pid"),
        "storage-driver": "overlay2",
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "2"},
    }
    if lacks_capability(CAP_SYS_RESOURCE):
        wrapper = _install_runtime_wrapper(directory)
        config["runtimes"] = {RUNTIME_NAME: {"path": str(wrapper)}}
        config["default-runtime"] = RUNTIME_NAME
    return config


def _install_runtime_wrapper(directory: Path) -> Path:
    """Write the runc wrapper (see the module docstring) next to the engine's configuration."""
    runc = shutil.which("runc") or "/usr/sbin/runc"
    source = resources.files("suanli.devenv.kindnode").joinpath("runc-drop-caps").read_text()
    wrapper = directory / "runc-drop-caps"
    # The system's Python, not a virtual environment's: .ci/run recreates .venv, and -S starts
    # it in milliseconds (runc is called for every container operation).
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    text = source.replace("@REAL_RUNC@", runc).replace("@PYTHON@", python)
    if not wrapper.exists() or wrapper.read_text() != text:
        wrapper.write_text(text)
    wrapper.chmod(0o755)
    return wrapper


def _start(dockerd: str, docker: str, log: Log) -> DockerEngine:
    directory = engine_dir()
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "daemon.json"
    config.write_text(json.dumps(_daemon_config(directory), indent=2))
    if lacks_capability(CAP_SYS_RESOURCE):
        log(
            "docker engine: this machine lacks CAP_SYS_RESOURCE; containers run through a runc "
            "wrapper that drops it (privileged kind nodes fail otherwise)"
        )
    log(f"docker engine: starting {dockerd} (data in {directory / 'data'})")
    with (directory / "dockerd.log").open("ab") as output:
        process = subprocess.Popen(
            [dockerd, "--config-file", str(config)],
            stdout=output,
            stderr=output,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives `suanli dev up`; `dev down` stops it
        )
    host = f"unix://{_own_socket()}"
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not _answers(docker, host):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop_pid(process.pid)
            log_tail = (directory / "dockerd.log").read_text(errors="replace").splitlines()[-15:]
            raise UserFacingError(
                f"dockerd did not answer within {START_TIMEOUT_SECONDS:.0f}s; its log ends:\n"
                + "\n".join(log_tail)
            )
        time.sleep(0.5)
    log(f"docker engine: dockerd running (pid {process.pid}); DOCKER_HOST={host}")
    return DockerEngine(host, started_here=True, docker=docker)


def _pid() -> int | None:
    try:
        pid = int((engine_dir() / "dockerd.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def _stop_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        _reap(pid)
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def _reap(pid: int) -> None:
    # When this process started dockerd, its exit leaves a zombie until waited for.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_engine_if_started_here(log: Log) -> bool:
    """Stop the dockerd suanli started (never a user's). False when there was none."""
    pid = _pid()
    if pid is None:
        return False
    log(f"docker engine: stopping the dockerd suanli started (pid {pid})")
    _stop_pid(pid)
    return True
