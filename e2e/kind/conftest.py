"""Fixtures for the tests on kind: a federation whose clusters are real kind clusters in Docker.

One kind federation (hub + 2 members) serves the tests of this directory and is deleted when
they end, together with the Docker engine if the session started it. Everything of suanli runs
as pods, installed by the Helm charts exactly as a cluster admin would (``kind_install``): the
operator's Deployment on the hub, with its probes, its webhook Service and chart-made
certificate and the chart's RBAC; the exporter's DaemonSet on each member's node, on the
stand-in NVML library. GPU nodes are kwok's, as in the process-based federation.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client

from e2e.kube import Cluster
from suanli.devenv import federation, kind_install
from suanli.devenv.docker_engine import DockerEngine, ensure_engine
from suanli.devenv.host_packages import ensure_kind_packages
from suanli.devenv.providers import is_alive
from suanli.devenv.toolchain import Toolchain, ensure_toolchain
from suanli.devenv.topology import default_federation
from suanli.errors import UserFacingError
from suanli.kits.waiting import TIMEOUTS, wait_for

KIND_FEDERATION = f"kind-e2e-{os.getpid()}"
GROUP, VERSION = "suanli.io", "v1alpha1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/kind/" in str(item.fspath):
            item.add_marker(pytest.mark.kind)


@pytest.fixture(scope="package")
def kind_toolchain() -> Toolchain:
    try:
        ensure_kind_packages(print)
    except UserFacingError as cannot:  # only where they cannot be installed: say why
        pytest.skip(str(cannot))
    return ensure_toolchain(kind=True)


def _clean_up_abandoned(toolchain: Toolchain) -> None:
    """Delete kind federations of earlier sessions that died without tearing down."""
    root = federation.federation_dir(KIND_FEDERATION).parent
    for directory in root.glob("kind-e2e-*") if root.exists() else []:
        owner = directory.name.rsplit("-", 1)[-1]
        if owner.isdigit() and not is_alive(int(owner)):
            federation.down(directory.name, toolchain, log=print)


@pytest.fixture(scope="package")
def kind_fed(kind_toolchain: Toolchain) -> Iterator[federation.FederationState]:
    _clean_up_abandoned(kind_toolchain)
    try:
        state = federation.up(
            default_federation(2),
            kind_toolchain,
            name=KIND_FEDERATION,
            provider_name="kind",
            log=print,
        )
        yield state
    finally:
        # Also stops the Docker engine when this session started it and nothing else uses it.
        federation.down(KIND_FEDERATION, kind_toolchain, log=print)


@pytest.fixture(scope="package")
def engine(kind_fed: federation.FederationState) -> DockerEngine:
    return ensure_engine(print)


@pytest.fixture(scope="package")
def kind_clusters(kind_fed: federation.FederationState) -> Iterator[dict[str, Cluster]]:
    opened = {
        info.name: Cluster(info, federation.api_client(info.kubeconfig))
        for info in kind_fed.clusters
    }
    try:
        yield opened
    finally:
        for cluster in opened.values():
            cluster.api.close()


@pytest.fixture(scope="package")
def suanli_installed(
    kind_fed: federation.FederationState,
    kind_toolchain: Toolchain,
    engine: DockerEngine,
    kind_clusters: dict[str, Cluster],
) -> kind_install.Images:
    """The charts installed; the operator Ready and every member Ready in its status."""
    try:
        images = kind_install.install_suanli(kind_fed, kind_toolchain, engine, print)
    except Exception:
        print(kind_install.describe_operator(kind_fed.hub))
        raise
    custom = client.CustomObjectsApi(kind_clusters["hub"].api)

    def members_ready() -> bool:
        for member in kind_fed.members:
            found = custom.get_cluster_custom_object(GROUP, VERSION, "memberclusters", member.name)
            conditions = {
                c["type"]: c["status"] for c in (found.get("status") or {}).get("conditions", [])
            }
            if conditions.get("Ready") != "True":
                return False
        return True

    try:
        wait_for(members_ready, timeout=TIMEOUTS.job_complete, what="the members to be Ready")
    except Exception:
        print(kind_install.describe_operator(kind_fed.hub))
        raise
    return images


@pytest.fixture
def kind_namespace(kind_clusters: dict[str, Cluster]) -> Iterator[str]:
    """A fresh namespace of the same name in every kind cluster, deleted after the test."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    for cluster in kind_clusters.values():
        cluster.core.create_namespace(
            {"metadata": {"name": name, "labels": {"suanli.io/e2e": "true"}}}
        )
    try:
        yield name
    finally:
        for cluster in kind_clusters.values():
            cluster.core.delete_namespace(name, propagation_policy="Background")
