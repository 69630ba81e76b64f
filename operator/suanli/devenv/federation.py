"""Bring a local federation (a hub and its member clusters) up and down.

``up`` is safe to repeat: clusters that already answer are kept, missing ones are created, and
nodes are (re)applied. Its result is written to ``federation.json`` in the federation's directory
so that ``down``, ``status``, the operator and the e2e tests find every cluster's kubeconfig.
``down`` stops every process the federation started and removes its directory.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from suanli.devenv.docker_engine import stop_engine_if_started_here
from suanli.devenv.manifests import GPU_RESOURCE, MANAGED_BY_LABEL, gpu_nodes
from suanli.devenv.providers import KindProvider, KwokctlProvider, make_provider
from suanli.devenv.toolchain import Toolchain, cache_root, toolchain_paths
from suanli.devenv.topology import ClusterSpec, FederationSpec
from suanli.errors import UserFacingError
from suanli.kits.waiting import TIMEOUTS, wait_for

STATE_FILE: Final = "federation.json"
DEFAULT_NAME: Final = "suanli"

Log = Callable[[str], None]


@dataclass(frozen=True)
class ClusterInfo:
    """A running cluster of the federation, as recorded in federation.json."""

    name: str  # name within the federation: hub, member-a, ...
    provider_name: str  # the provider's cluster name: <federation>-<name>
    kubeconfig: str
    role: str  # "hub" or "member"
    region: str
    nodes: int  # simulated GPU nodes
    gpus: dict[str, int]  # GPUs per model across those nodes
    # A kubeconfig that works from inside the clusters' network (kind: another cluster's pods
    # reach this one's API server at its node's name); "" where the host's kubeconfig serves.
    internal_kubeconfig: str = ""


@dataclass(frozen=True)
class FederationState:
    name: str
    provider: str
    directory: str
    clusters: list[ClusterInfo]

    @property
    def hub(self) -> ClusterInfo:
        return next(c for c in self.clusters if c.role == "hub")

    @property
    def members(self) -> list[ClusterInfo]:
        return [c for c in self.clusters if c.role == "member"]

    def cluster(self, name: str) -> ClusterInfo:
        for info in self.clusters:
            if info.name == name:
                return info
        raise KeyError(name)


def federation_dir(name: str) -> Path:
    return cache_root() / "federations" / name


def load_state(name: str = DEFAULT_NAME) -> FederationState | None:
    """The recorded federation, or None when none is up."""
    try:
        raw = json.loads((federation_dir(name) / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    clusters = [ClusterInfo(**cluster) for cluster in raw.pop("clusters")]
    return FederationState(clusters=clusters, **raw)


def _save_state(state: FederationState) -> None:
    path = Path(state.directory) / STATE_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(state), indent=2))
    temporary.replace(path)


def api_client(kubeconfig: str | Path) -> client.ApiClient:
    """A Kubernetes API client for one cluster (no global configuration is touched)."""
    return config.new_client_from_config(config_file=str(kubeconfig))


def _answers(kubeconfig: Path) -> bool:
    """Whether the API server is ready to serve: /readyz, not just /version.

    Right after start-up an API server answers /version while its storage still initialises
    and refuses other requests with 429; clients started then would fail their first lists.
    """
    if not kubeconfig.exists():
        return False
    try:
        with api_client(kubeconfig) as api:
            response = api.rest_client.pool_manager.request(
                "GET", f"{api.configuration.host}/readyz", timeout=5
            )
            return bool(response.status == 200)
    except Exception:  # any failure means "not ready"
        return False


def up(
    spec: FederationSpec,
    toolchain: Toolchain,
    *,
    name: str = DEFAULT_NAME,
    provider_name: str = "kwok",
    log: Log = print,
) -> FederationState:
    """Create what is missing, apply GPU nodes, wait until every node is Ready."""
    directory = federation_dir(name)
    directory.mkdir(parents=True, exist_ok=True)
    previous = load_state(name)
    if previous is not None and previous.provider != provider_name:
        raise UserFacingError(
            f"federation {name!r} is already up with provider {previous.provider}; "
            f"run `suanli dev down --name {name}` first"
        )
    provider = make_provider(provider_name, toolchain, directory)
    started = time.monotonic()
    if isinstance(provider, KindProvider):
        # The engine and the node image once, before the clusters are created in parallel.
        provider.prepare(log)

    def bring_up(cluster: ClusterSpec) -> ClusterInfo:
        cluster_name = f"{name}-{cluster.name}"
        kubeconfig = getattr(provider, "kubeconfig", None)
        existing = kubeconfig(cluster_name) if kubeconfig is not None else None
        if existing is not None and _answers(existing):
            log(f"{cluster.name}: already running")
            path = existing
        else:
            if existing is not None and existing.exists():
                provider.delete(cluster_name)  # a half-dead cluster from an earlier run
            t0 = time.monotonic()
            path = provider.create(cluster_name).kubeconfig
            log(f"{cluster.name}: control plane up in {time.monotonic() - t0:.1f}s")
        _apply_nodes(path, cluster)
        internal = getattr(provider, "internal_kubeconfig", None)
        return ClusterInfo(
            name=cluster.name,
            provider_name=cluster_name,
            kubeconfig=str(path),
            role="hub" if cluster is spec.hub else "member",
            region=cluster.region,
            nodes=sum(pool.count for pool in cluster.node_pools),
            gpus=cluster.gpu_capacity,
            internal_kubeconfig=str(internal(cluster_name)) if internal is not None else "",
        )

    log(f"bringing up federation {name!r}: hub + {len(spec.members)} member(s) via {provider.name}")
    # Control planes start in parallel: most of their start-up is waiting, not computing.
    with ThreadPoolExecutor(max_workers=len(spec.clusters)) as pool:
        clusters = list(pool.map(bring_up, spec.clusters))
    state = FederationState(name, provider.name, str(directory), clusters)
    _save_state(state)
    for cluster in clusters:
        wait_for(
            functools.partial(_answers, Path(cluster.kubeconfig)),
            timeout=TIMEOUTS.api_ready,
            what=f"{cluster.name}'s API server to be ready",
        )
        _wait_nodes_ready(Path(cluster.kubeconfig), cluster)
    log(f"federation {name!r} ready in {time.monotonic() - started:.1f}s")
    return state


def _apply_nodes(kubeconfig: Path, cluster: ClusterSpec) -> None:
    with api_client(kubeconfig) as api:
        core = client.CoreV1Api(api)
        for node in gpu_nodes(cluster):
            try:
                core.create_node(node)
            except ApiException as error:
                if error.status != 409:  # AlreadyExists: up() is idempotent
                    raise


def _wait_nodes_ready(kubeconfig: Path, cluster: ClusterInfo) -> None:
    expected = cluster.nodes
    if expected == 0:
        return
    with api_client(kubeconfig) as api:
        core = client.CoreV1Api(api)

        def all_ready() -> bool:
            nodes = core.list_node(label_selector=f"{MANAGED_BY_LABEL}={cluster.name}").items
            ready = [n for n in nodes if _node_ready(n)]
            return len(ready) >= expected

        wait_for(all_ready, timeout=TIMEOUTS.nodes_ready, what=f"{cluster.name}'s nodes Ready")


def _node_ready(node: Any) -> bool:
    return any(
        condition.type == "Ready" and condition.status == "True"
        for condition in (node.status.conditions or [])
    )


def down(name: str = DEFAULT_NAME, toolchain: Toolchain | None = None, log: Log = print) -> bool:
    """Stop every cluster of the federation and remove its directory. False if none was up."""
    directory = federation_dir(name)
    state = load_state(name)
    if state is None and not directory.exists():
        log(f"federation {name!r} is not up")
        return False
    if toolchain is None:
        toolchain = toolchain_paths()
    provider = make_provider(state.provider if state else "kwok", toolchain, directory)
    names = [c.provider_name for c in state.clusters] if state else _orphaned_clusters(directory)
    for cluster_name in names:
        provider.delete(cluster_name)
        log(f"{cluster_name}: stopped")
    leftovers = [pid for cluster_name in names for pid in provider.pids(cluster_name)]
    if leftovers:
        raise UserFacingError(f"processes still running after down: {leftovers}")
    shutil.rmtree(directory, ignore_errors=True)
    if isinstance(provider, KindProvider) and not kind_federations():
        # The engine suanli started for kind goes with the last kind federation; a user's
        # engine is never stopped.
        stop_engine_if_started_here(log)
    log(f"federation {name!r} is down")
    return True


def kind_federations() -> list[str]:
    """Names of the kind federations that are up."""
    root = federation_dir(DEFAULT_NAME).parent
    names = [d.name for d in root.iterdir()] if root.exists() else []
    return [name for name in names if (s := load_state(name)) is not None and s.provider == "kind"]


def _orphaned_clusters(directory: Path) -> list[str]:
    clusters = directory / "kwok" / "clusters"
    return sorted(p.name for p in clusters.iterdir()) if clusters.exists() else []


def cluster_pids(state: FederationState, cluster: ClusterInfo, toolchain: Toolchain) -> list[int]:
    """Live processes of one cluster on this machine."""
    provider = make_provider(state.provider, toolchain, Path(state.directory))
    return provider.pids(cluster.provider_name)


def resident_memory_bytes(state: FederationState, toolchain: Toolchain) -> dict[str, int]:
    """Resident memory of each cluster's processes, from /proc (Linux)."""
    usage: dict[str, int] = {}
    for cluster in state.clusters:
        total = 0
        for pid in cluster_pids(state, cluster, toolchain):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        usage[cluster.name] = total
    return usage


def stop_cluster(state: FederationState, name: str, toolchain: Toolchain) -> None:
    """Stop one cluster's control plane, keeping its data: a computing center's outage."""
    provider = make_provider(state.provider, toolchain, Path(state.directory))
    if not isinstance(provider, KwokctlProvider):
        raise UserFacingError(
            f"stopping a single cluster needs the kwok provider, not {state.provider}"
        )
    provider.stop(state.cluster(name).provider_name)


def start_cluster(state: FederationState, name: str, toolchain: Toolchain) -> None:
    """Start a cluster stopped by :func:`stop_cluster` again."""
    provider = make_provider(state.provider, toolchain, Path(state.directory))
    if not isinstance(provider, KwokctlProvider):
        raise UserFacingError(
            f"starting a single cluster needs the kwok provider, not {state.provider}"
        )
    provider.start(state.cluster(name).provider_name)


def api_port(kubeconfig: str | Path) -> int:
    """The local port the cluster's API server listens on, from its kubeconfig."""
    document = yaml.safe_load(Path(kubeconfig).read_text())
    server = urlsplit(document["clusters"][0]["cluster"]["server"])
    if server.port is None:
        raise ValueError(f"{kubeconfig}: server {server.geturl()} names no port")
    return int(server.port)


def gpu_capacity(kubeconfig: str | Path) -> dict[str, int]:
    """Allocatable GPUs per node, as the cluster's API reports them."""
    with api_client(kubeconfig) as api:
        nodes = client.CoreV1Api(api).list_node().items
    return {
        node.metadata.name: int((node.status.allocatable or {}).get(GPU_RESOURCE, "0"))
        for node in nodes
    }
