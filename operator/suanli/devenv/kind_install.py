"""Install suanli on a kind federation with its Helm charts, as a cluster admin would.

In a kind federation nothing of suanli runs on the host: the hub gets the ``suanli`` chart (the
operator's Deployment with its probes, the webhook Service and chart-made certificate, the
CRDs and the chart's RBAC), with the image built from this checkout and loaded into the hub's
node; each member gets the ``suanli-exporter`` chart, whose DaemonSet runs on the member's one
real node against the stand-in NVML library. Members are joined with kubeconfigs that work from
inside the kind network (the operator's pod reaches a member's API server at its node's name).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from kubernetes import client

from suanli.api.names import LEADER_LABEL, SYSTEM_NAMESPACE
from suanli.devenv import install
from suanli.devenv.docker_engine import DockerEngine, run_command
from suanli.devenv.federation import ClusterInfo, FederationState, api_client
from suanli.devenv.operator_image import ensure_exporter_image, ensure_operator_image
from suanli.devenv.providers import NODE_LABEL
from suanli.devenv.toolchain import KIND, Toolchain
from suanli.errors import UserFacingError
from suanli.kits.waiting import wait_for

Log = Callable[[str], None]

RELEASE: Final = "suanli"
EXPORTER_RELEASE: Final = "suanli-exporter"
NAMESPACE: Final = SYSTEM_NAMESPACE
HELM_TIMEOUT_SECONDS: Final = 300.0
OPERATOR_READY_TIMEOUT_SECONDS: Final = 180.0


@dataclass(frozen=True)
class Images:
    """suanli's images, as loaded into the kind nodes."""

    operator: str
    exporter: str


def charts_dir() -> Path:
    """The checkout's charts/ directory."""
    root = Path(__file__).resolve().parents[3]
    charts = root / "charts"
    if not (charts / "suanli" / "Chart.yaml").is_file():
        raise UserFacingError(f"no charts at {charts}: install from a checkout")
    return charts


def _split(reference: str) -> dict[str, str]:
    repository, tag = reference.rsplit(":", 1)
    # Never pulled: the image exists only in the node's containerd, loaded by kind.
    return {"repository": repository, "tag": tag, "pullPolicy": "Never"}


def hub_values(images: Images, **changes: Any) -> dict[str, Any]:
    """The hub release's values: the local image, member Secrets in the release namespace."""
    values: dict[str, Any] = {
        "image": _split(images.operator),
        # Short timers, so that a local federation reacts within seconds.
        "operator": {"recountInterval": 5, "holdGrace": 10},
    }
    for key, value in changes.items():
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    return values


def exporter_values(images: Images) -> dict[str, Any]:
    """The member release's values: the exporter on the kind node, on the stand-in NVML."""
    return {
        "image": _split(images.exporter),
        # No NVIDIA runtime: the image carries the stand-in library itself.
        "runtimeClassName": "",
        # On the kind node only; null removes the chart's default GPU-node selector (helm
        # merges maps), since the kind node has no GPU label and the kwok nodes run nothing.
        "nodeSelector": {"nvidia.com/gpu.present": None, NODE_LABEL: "true"},
    }


@dataclass(frozen=True)
class Helm:
    """The toolchain's helm against one cluster, with its own cache and config directories."""

    binary: Path
    kubeconfig: str
    home: Path

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        try:
            result = subprocess.run(
                [str(self.binary), "--kubeconfig", self.kubeconfig, *args],
                capture_output=True,
                text=True,
                timeout=HELM_TIMEOUT_SECONDS + 60,
                check=False,
                env=env,
            )
        except subprocess.TimeoutExpired as error:
            raise UserFacingError(f"helm {args[0]} did not finish in time") from error
        if check and result.returncode != 0:
            raise UserFacingError(f"helm {' '.join(args[:2])} failed:\n{result.stderr[-3000:]}")
        return result

    def install(self, release: str, chart: Path, values: dict[str, Any], workdir: Path) -> None:
        """``helm upgrade --install`` with ``values``, waiting for its workloads."""
        path = workdir / f"{release}.values.yaml"
        path.write_text(yaml.safe_dump(values))
        self(
            "upgrade",
            "--install",
            release,
            str(chart),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--values",
            str(path),
            "--wait",
            "--timeout",
            f"{HELM_TIMEOUT_SECONDS:.0f}s",
        )


def load_image(engine: DockerEngine, image: str, cluster: ClusterInfo) -> None:
    """``kind load docker-image`` into the cluster's node (skipped when already there)."""
    run_command(
        [str(KIND.path("kind")), "load", "docker-image", image, "--name", cluster.provider_name],
        env=engine.env,
        what=f"kind load docker-image {image} into {cluster.name}",
        timeout=300,
    )


def build_images(engine: DockerEngine, log: Log) -> Images:
    operator = ensure_operator_image(engine, log)
    return Images(operator=operator, exporter=ensure_exporter_image(engine, operator, log))


def install_suanli(
    state: FederationState,
    toolchain: Toolchain,
    engine: DockerEngine,
    log: Log,
    *,
    hub_changes: dict[str, Any] | None = None,
) -> Images:
    """Images built and loaded; the hub chart installed and Ready; members joined and exporting."""
    images = build_images(engine, log)
    started = time.monotonic()
    loads = [(images.operator, state.hub)] + [(images.exporter, m) for m in state.members]
    # In parallel: each load is mostly waiting on `docker save` and the node's import.
    with ThreadPoolExecutor(max_workers=len(loads)) as pool:
        list(pool.map(lambda load: load_image(engine, *load), loads))
    log(f"images loaded into the kind nodes in {time.monotonic() - started:.0f}s")
    workdir = Path(state.directory) / "helm"
    workdir.mkdir(parents=True, exist_ok=True)
    charts = charts_dir()
    hub_helm = Helm(toolchain.helm, state.hub.kubeconfig, workdir)
    hub_helm.install(RELEASE, charts / "suanli", hub_values(images, **(hub_changes or {})), workdir)
    wait_admission_leader(state.hub)
    log(f"hub: chart {RELEASE} installed; the operator's replicas are Ready, one leads")
    with api_client(state.hub.kubeconfig) as hub:
        join_members_internally(hub, state.members)
    for member in state.members:
        helm = Helm(toolchain.helm, member.kubeconfig, workdir / member.name)
        helm.install(EXPORTER_RELEASE, charts / "suanli-exporter", exporter_values(images), workdir)
        log(f"{member.name}: chart {EXPORTER_RELEASE} installed; the exporter is Ready")
    return images


def join_members_internally(hub: client.ApiClient, members: list[ClusterInfo]) -> None:
    """Join the members as the hub's pods reach them: the hub's identity is applied on each
    member from this machine (its admin kubeconfig), and the hub's kubeconfig names the
    member's API server by its address on the kind network."""
    servers = {
        member.name: _server_of(Path(member.internal_kubeconfig))
        for member in members
        if member.internal_kubeconfig
    }
    install.join_members(hub, members, servers=servers)


def _server_of(kubeconfig: Path) -> str:
    """The server URL of a kubeconfig's first cluster."""
    config = yaml.safe_load(kubeconfig.read_text())
    return str(config["clusters"][0]["cluster"]["server"])


def operator_pods(hub: ClusterInfo) -> list[Any]:
    with api_client(hub.kubeconfig) as api:
        return list(
            client.CoreV1Api(api)
            .list_namespaced_pod(NAMESPACE, label_selector="app.kubernetes.io/component=operator")
            .items
        )


def _ready(pod: Any) -> bool:
    return pod.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
    )


def wait_admission_leader(hub: ClusterInfo) -> Any:
    """The admission leader's pod, once every replica the Deployment wants is Running and
    Ready and exactly one of them is marked the leader (the webhook Service's endpoint)."""
    with api_client(hub.kubeconfig) as api:
        wanted = (
            client.AppsV1Api(api)
            .read_namespaced_deployment(f"{RELEASE}-operator", NAMESPACE)
            .spec.replicas
        )

    def ready() -> Any:
        pods = [p for p in operator_pods(hub) if p.metadata.deletion_timestamp is None]
        leaders = [p for p in pods if (p.metadata.labels or {}).get(LEADER_LABEL) == "true"]
        settled = len(pods) == wanted and all(map(_ready, pods)) and len(leaders) == 1
        # ... and the webhook Service routes to it (its endpoints follow the label).
        if settled and _webhook_endpoints(hub) == [leaders[0].status.pod_ip]:
            return leaders[0]
        return None

    return wait_for(
        ready, timeout=OPERATOR_READY_TIMEOUT_SECONDS, what="the operator's replicas and leader"
    )


def _webhook_endpoints(hub: ClusterInfo) -> list[str]:
    """The ready addresses behind the chart's webhook Service."""
    with api_client(hub.kubeconfig) as api:
        slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
            NAMESPACE, label_selector=f"kubernetes.io/service-name={RELEASE}-webhook"
        )
    return [
        address
        for endpoint_slice in slices.items
        for endpoint in endpoint_slice.endpoints or []
        if endpoint.conditions is None or endpoint.conditions.ready is not False
        for address in endpoint.addresses
    ]


def describe_operator(hub: ClusterInfo) -> str:
    """The operator pods' state and log tail, for a failure message."""
    lines: list[str] = []
    with api_client(hub.kubeconfig) as api:
        core = client.CoreV1Api(api)
        for pod in operator_pods(hub):
            statuses = [s.to_dict() for s in pod.status.container_statuses or []]
            lines.append(
                f"{pod.metadata.name}: {pod.status.phase} {json.dumps(statuses, default=str)}"
            )
            with contextlib.suppress(Exception):
                log = core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE, tail_lines=40)
                lines.append(log)
    return "\n".join(lines)
