"""How a control plane is created and destroyed: kwokctl's binary runtime, or kind.

Only cluster creation and deletion differ between providers; nodes, stages, readiness and the
federation's bookkeeping are shared (see ``federation.py``).

- ``kwok`` (default): kwokctl starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler
  and kwok's controller as local processes bound to 127.0.0.1, from the binaries the toolchain
  built. Needs no container engine.
- ``kind``: kind creates a real single-node cluster in Docker, and a kwok controller runs on the
  host against it to simulate the GPU nodes. For users and hosted CI with Docker; it cannot run
  on machines without a container engine (such as this project's development machines).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import yaml

from suanli.devenv.manifests import Manifest, kwok_stages
from suanli.devenv.toolchain import KUBERNETES_VERSION, Toolchain
from suanli.errors import UserFacingError

CREATE_TIMEOUT_SECONDS: Final = 180.0


@dataclass(frozen=True)
class CreatedCluster:
    name: str
    kubeconfig: Path


class Provider(Protocol):
    name: str

    def create(self, cluster: str) -> CreatedCluster: ...

    def delete(self, cluster: str) -> None: ...

    def pids(self, cluster: str) -> list[int]:
        """Processes on this machine that belong to the cluster (for status and clean-up)."""
        ...


def _run(command: list[str], env: dict[str, str], what: str, timeout: float) -> None:
    try:
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise UserFacingError(f"{what} did not finish within {timeout:.0f}s") from error
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise UserFacingError(f"{what} failed (exit {result.returncode}):\n{output}")


def is_alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it holds no port or memory, so it counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def terminate(pids: list[int], grace_seconds: float = 10.0) -> None:
    """SIGTERM, then SIGKILL whatever is still alive after the grace period."""
    for pid in pids:
        if is_alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and any(is_alive(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        if is_alive(pid):
            os.kill(pid, signal.SIGKILL)


def _read_pid_files(directory: Path, pattern: str = "*.pid") -> list[int]:
    pids: list[int] = []
    for pid_file in sorted(directory.glob(pattern)):
        try:
            pids.append(int(pid_file.read_text().strip()))
        except (OSError, ValueError):
            continue
    return [pid for pid in pids if is_alive(pid)]


# kwokctl picks free ports itself, but two kwokctl processes started together can pick the same
# one; handing each cluster its own set makes parallel creation safe.
_PORT_OPTIONS: Final = (
    "kubeApiserverPort",
    "etcdPort",
    "etcdPeerPort",
    "kubeControllerManagerPort",
    "kubeSchedulerPort",
    "kwokControllerPort",
)
_port_lock = threading.Lock()
_ports_handed_out: set[int] = set()


def _free_ports(names: tuple[str, ...]) -> dict[str, int]:
    """Distinct free loopback ports, never the same twice within this process."""
    ports: dict[str, int] = {}
    with _port_lock, contextlib.ExitStack() as stack:
        for name in names:
            while True:
                probe = stack.enter_context(socket.socket())
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
                if port not in _ports_handed_out:
                    break
            _ports_handed_out.add(port)
            ports[name] = port
    return ports


class KwokctlProvider:
    """Control planes as local processes, managed by kwokctl's binary runtime."""

    name = "kwok"

    def __init__(self, toolchain: Toolchain, workdir: Path) -> None:
        self._toolchain = toolchain
        self._workdir = workdir / "kwok"

    def _env(self) -> dict[str, str]:
        path = os.pathsep.join(
            [*(str(d) for d in self._toolchain.bin_dirs), os.environ.get("PATH", "")]
        )
        # kwokctl looks kubectl up on PATH for its health check (and would download one if
        # missing); ours comes first so the machine's old kubectl is never used.
        return {**os.environ, "PATH": path, "KWOK_WORKDIR": str(self._workdir)}

    def _config(self, ports: dict[str, int]) -> list[dict[str, Any]]:
        tools = self._toolchain
        options: dict[str, Any] = {
            **ports,
            "runtime": "binary",
            "bindAddress": "127.0.0.1",
            "kubeVersion": KUBERNETES_VERSION,
            "kubeApiserverBinary": str(tools.kube_apiserver),
            "kubeControllerManagerBinary": str(tools.kube_controller_manager),
            "kubeSchedulerBinary": str(tools.kube_scheduler),
            "kubectlBinary": str(tools.kubectl),
            "kwokControllerBinary": str(tools.kwok),
            "etcdBinary": str(tools.etcd),
            # Admission (and so webhooks) and RBAC stay on: the operator is tested with both.
            "kubeAdmission": True,
            "kubeAuthorization": True,
            "etcdQuotaBackendSize": "2Gi",
        }
        configuration = {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokctlConfiguration",
            "options": options,
        }
        return [configuration, *kwok_stages()]

    def create(self, cluster: str) -> CreatedCluster:
        config_path = self._workdir / f"{cluster}.config.yaml"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(
            yaml.safe_dump_all(self._config(_free_ports(_PORT_OPTIONS)), sort_keys=False)
        )
        _run(
            [
                str(self._toolchain.kwokctl),
                "--name",
                cluster,
                "create",
                "cluster",
                "--config",
                str(config_path),
                # Leave the user's ~/.kube/config alone; we hand out our own kubeconfig.
                "--kubeconfig",
                "",
                "--timeout",
                f"{CREATE_TIMEOUT_SECONDS:.0f}s",
                "--wait",
                f"{CREATE_TIMEOUT_SECONDS:.0f}s",
            ],
            self._env(),
            f"kwokctl create cluster {cluster}",
            CREATE_TIMEOUT_SECONDS + 30,
        )
        return CreatedCluster(cluster, self.kubeconfig(cluster))

    def kubeconfig(self, cluster: str) -> Path:
        return self._workdir / "clusters" / cluster / "kubeconfig.yaml"

    def stop(self, cluster: str) -> None:
        """Stop the cluster's processes, keeping its data (an outage, for tests and demos)."""
        # kwok holds each node's lease under an identity that is new in every kwok process,
        # and waits for a lease held by another identity to run out before it manages that
        # node. Restarted, it would leave the nodes and their pods alone for up to the lease
        # duration (200 s here): pods bound after the outage stayed Pending. A kubelet keeps
        # its node across a restart; to act like one, kwok stops first and its leases go
        # while the API server still answers, so the next kwok takes the nodes at once.
        pids = self._workdir / "clusters" / cluster / "pids"
        terminate(_read_pid_files(pids, "kwok-controller.pid"))
        try:
            _run(
                [
                    str(self._toolchain.kubectl),
                    "--kubeconfig",
                    str(self.kubeconfig(cluster)),
                    "--namespace",
                    "kube-node-lease",
                    "delete",
                    "leases",
                    "--all",
                    "--wait=false",
                ],
                self._env(),
                f"deleting the node leases of {cluster}",
                30,
            )
        except UserFacingError as error:  # the restart is only slower: say so, and go on
            print(
                f"[suanli dev] {error}; its nodes come back once their leases run out",
                file=sys.stderr,
            )
        _run(
            [str(self._toolchain.kwokctl), "--name", cluster, "stop", "cluster"],
            self._env(),
            f"kwokctl stop cluster {cluster}",
            120,
        )

    def start(self, cluster: str) -> None:
        """Start a stopped cluster again with its data."""
        _run(
            [str(self._toolchain.kwokctl), "--name", cluster, "start", "cluster"],
            self._env(),
            f"kwokctl start cluster {cluster}",
            CREATE_TIMEOUT_SECONDS,
        )

    def delete(self, cluster: str) -> None:
        left = self.pids(cluster)
        if (self._workdir / "clusters" / cluster).exists():
            _run(
                [str(self._toolchain.kwokctl), "--name", cluster, "delete", "cluster"],
                self._env(),
                f"kwokctl delete cluster {cluster}",
                120,
            )
        # kwokctl stops what it started; make sure, since a leftover etcd holds ports and disk.
        terminate(left)

    def pids(self, cluster: str) -> list[int]:
        return _read_pid_files(self._workdir / "clusters" / cluster / "pids")


class KindProvider:
    """A real cluster in Docker from kind, its GPU nodes simulated by a host kwok controller."""

    name = "kind"

    def __init__(self, toolchain: Toolchain, workdir: Path) -> None:
        self._toolchain = toolchain
        self._workdir = workdir / "kind"

    def _require(self) -> str:
        kind = shutil.which("kind")
        if kind is None or shutil.which("docker") is None:
            raise UserFacingError(
                "the kind provider needs `kind` and a running Docker engine; neither can run on "
                "machines without a container engine: use --provider kwok there."
            )
        return kind

    def create(self, cluster: str) -> CreatedCluster:
        kind = self._require()
        directory = self._workdir / cluster
        directory.mkdir(parents=True, exist_ok=True)
        kubeconfig = directory / "kubeconfig.yaml"
        _run(
            [
                kind,
                "create",
                "cluster",
                "--name",
                cluster,
                "--kubeconfig",
                str(kubeconfig),
                "--wait",
                f"{CREATE_TIMEOUT_SECONDS:.0f}s",
            ],
            dict(os.environ),
            f"kind create cluster {cluster}",
            CREATE_TIMEOUT_SECONDS + 60,
        )
        stages = directory / "stages.yaml"
        stages.write_text(yaml.safe_dump_all(_kwok_controller_config(), sort_keys=False))
        log = (directory / "kwok.log").open("ab")
        process = subprocess.Popen(
            [
                str(self._toolchain.kwok),
                "--kubeconfig",
                str(kubeconfig),
                "--config",
                str(stages),
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,  # outlives `suanli dev up`; `down` stops it
        )
        (directory / "pids").mkdir(exist_ok=True)
        (directory / "pids" / "kwok-controller.pid").write_text(str(process.pid))
        return CreatedCluster(cluster, kubeconfig)

    def delete(self, cluster: str) -> None:
        terminate(self.pids(cluster))
        kind = shutil.which("kind")
        if kind is not None:
            _run(
                [kind, "delete", "cluster", "--name", cluster],
                dict(os.environ),
                f"kind delete cluster {cluster}",
                120,
            )

    def pids(self, cluster: str) -> list[int]:
        return _read_pid_files(self._workdir / cluster / "pids")


def _kwok_controller_config() -> list[Manifest]:
    return [
        {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokConfiguration",
            "options": {"enableCRDs": []},
        },
        *kwok_stages(),
    ]


def make_provider(name: str, toolchain: Toolchain, workdir: Path) -> Provider:
    if name == "kwok":
        return KwokctlProvider(toolchain, workdir)
    if name == "kind":
        return KindProvider(toolchain, workdir)
    raise UserFacingError(f"unknown provider {name!r}: choose kwok or kind")
