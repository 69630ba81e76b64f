"""How a control plane is created and destroyed: kwokctl's binary runtime, or kind.

Only cluster creation and deletion differ between providers; nodes, stages, readiness and the
federation's bookkeeping are shared (see ``federation.py``).

- ``kwok`` (default): kwokctl starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler
  and kwok's controller as local processes bound to 127.0.0.1, from the binaries the toolchain
  built. Needs no container engine.
- ``kind``: kind creates a real single-node cluster in Docker, and a kwok controller runs on the
  host against it to simulate the GPU nodes. Docker's engine is the running one or Debian's,
  started here; the node image is assembled locally (``kindnode/``) or, where registries are
  reachable, kind's public one.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import yaml

from suanli.devenv.docker_engine import (
    CAP_SYS_RESOURCE,
    DockerEngine,
    ensure_engine,
    find_engine,
    lacks_capability,
    run_command,
)
from suanli.devenv.kindnode.images import ensure_node_image
from suanli.devenv.manifests import Manifest, kwok_stages
from suanli.devenv.toolchain import KIND, KUBERNETES_VERSION, Toolchain
from suanli.errors import UserFacingError

CREATE_TIMEOUT_SECONDS: Final = 180.0
# The label on a kind cluster's one real node: the node where suanli's exporter runs on the
# stand-in NVML library (the GPU nodes are kwok's and run nothing).
NODE_LABEL: Final = "suanli.io/kind-node"


def public_images() -> bool:
    """Whether to use public images (kind's default node image, Python from Docker Hub).

    ``SUANLI_KIND_IMAGES=public`` is for machines that reach the registries, such as a hosted
    CI runner: nothing is built from Debian packages there. The default, ``local``, builds
    every image on this machine.
    """
    return os.environ.get("SUANLI_KIND_IMAGES", "local") == "public"


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
    """A real cluster in Docker from kind, its GPU nodes simulated by a host kwok controller.

    Each cluster is one kind node (control plane and worker at once), made from the node image
    built locally (``kindnode/images.py``) or, with ``SUANLI_KIND_IMAGES=public``, kind's own
    default image from its registry. The Docker engine is the running one, or Debian's dockerd
    started for the purpose (``docker_engine.py``). Pods of the cluster's own add-ons and of
    suanli's charts run for real on that node; GPU nodes are kwok Nodes, managed by a kwok
    controller on this machine, so GPU pods bind to them and follow kwok's stages.
    """

    name = "kind"

    def __init__(self, toolchain: Toolchain, workdir: Path) -> None:
        self._toolchain = toolchain
        self._workdir = workdir / "kind"
        self._lock = threading.Lock()
        self._prepared: tuple[DockerEngine, str | None] | None = None

    def _kind(self) -> str:
        built = KIND.path("kind")
        found = str(built) if built.is_file() else shutil.which("kind")
        if found is None:
            raise UserFacingError(
                "kind is not built: run `suanli dev toolchain --kind` (it builds kind from its Go "
                "module with the other parts of the kind provider)"
            )
        return found

    def prepare(self, log: Callable[[str], None] = print) -> tuple[DockerEngine, str | None]:
        """The engine, and the node image (None: kind's default), made ready once."""
        with self._lock:
            if self._prepared is None:
                engine = ensure_engine(log)
                image = None if public_images() else ensure_node_image(engine, log)
                self._prepared = (engine, image)
            return self._prepared

    def engine(self) -> DockerEngine | None:
        """The engine, if one answers (no image is built and no engine started)."""
        return self._prepared[0] if self._prepared else find_engine()

    def cluster_config(self, cluster: str) -> dict[str, Any]:
        """kind's configuration for one single-node cluster."""
        config: dict[str, Any] = {
            "kind": "Cluster",
            "apiVersion": "kind.x-k8s.io/v1alpha4",
            "name": cluster,
            "networking": {"apiServerAddress": "127.0.0.1"},
            "nodes": [{"role": "control-plane", "labels": {NODE_LABEL: "true"}}],
        }
        if lacks_capability(CAP_SYS_RESOURCE):
            # Lowering a process's oom_score_adj needs CAP_SYS_RESOURCE; without it runc fails
            # every pod sandbox ("can't get final child's PID from pipe: EOF").
            config["containerdConfigPatches"] = [
                '[plugins."io.containerd.grpc.v1.cri"]\n  restrict_oom_score_adj = true\n'
            ]
        return config

    def create(self, cluster: str) -> CreatedCluster:
        engine, image = self.prepare()
        kind = self._kind()
        directory = self._workdir / cluster
        directory.mkdir(parents=True, exist_ok=True)
        kubeconfig = directory / "kubeconfig.yaml"
        config = directory / "kind.yaml"
        config.write_text(yaml.safe_dump(self.cluster_config(cluster), sort_keys=False))
        command = [
            kind,
            "create",
            "cluster",
            "--name",
            cluster,
            "--config",
            str(config),
            "--kubeconfig",
            str(kubeconfig),
            "--wait",
            f"{CREATE_TIMEOUT_SECONDS:.0f}s",
        ]
        if image is not None:
            command += ["--image", image]
        _run(command, engine.env, f"kind create cluster {cluster}", CREATE_TIMEOUT_SECONDS + 120)
        internal = run_command(
            [kind, "get", "kubeconfig", "--internal", "--name", cluster],
            env=engine.env,
            what=f"kind get kubeconfig --internal {cluster}",
            timeout=60,
        ).stdout
        self.internal_kubeconfig(cluster).write_bytes(internal)
        self._start_kwok(directory, kubeconfig)
        return CreatedCluster(cluster, kubeconfig)

    def _start_kwok(self, directory: Path, kubeconfig: Path) -> None:
        stages = directory / "stages.yaml"
        stages.write_text(yaml.safe_dump_all(_kwok_controller_config(), sort_keys=False))
        (directory / "pids").mkdir(exist_ok=True)
        with (directory / "kwok.log").open("ab") as log:
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
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives `suanli dev up`; `down` stops it
            )
        (directory / "pids" / "kwok-controller.pid").write_text(str(process.pid))

    def kubeconfig(self, cluster: str) -> Path:
        return self._workdir / cluster / "kubeconfig.yaml"

    def internal_kubeconfig(self, cluster: str) -> Path:
        """The kubeconfig that works from inside the kind network (other clusters' pods)."""
        return self._workdir / cluster / "kubeconfig.internal.yaml"

    def delete(self, cluster: str) -> None:
        terminate(self.pids(cluster))
        engine = self.engine()
        if engine is None:
            return  # no engine runs: no container of this cluster can run either
        _run(
            [self._kind(), "delete", "cluster", "--name", cluster],
            engine.env,
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
            # kwok leaves these at zero when a configuration file is given (kwokctl sets them
            # for the clusters it creates); zero parallelism refuses to start.
            "options": {
                "enableCRDs": [],
                "podPlayStageParallelism": 4,
                "nodePlayStageParallelism": 4,
                "nodeLeaseParallelism": 4,
                "podsOnNodeSyncParallelism": 1,
                "nodeLeaseDurationSeconds": 40,
            },
        },
        *kwok_stages(),
    ]


def make_provider(name: str, toolchain: Toolchain, workdir: Path) -> Provider:
    if name == "kwok":
        return KwokctlProvider(toolchain, workdir)
    if name == "kind":
        return KindProvider(toolchain, workdir)
    raise UserFacingError(f"unknown provider {name!r}: choose kwok or kind")
