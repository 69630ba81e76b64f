"""Fixtures for tests on real control planes.

One federation (hub + 2 members, kwok provider) serves the whole session; it is started from the
project's own toolchain and stopped at the end, and the session fails if any of its processes
outlives it. Each test gets fresh namespaces so tests never see each other's objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from e2e.kube import Cluster
from suanli.devenv import federation
from suanli.devenv.toolchain import Toolchain, ensure_toolchain
from suanli.devenv.topology import default_federation

E2E_FEDERATION = "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def toolchain() -> Toolchain:
    return ensure_toolchain()


@pytest.fixture(scope="session")
def fed(toolchain: Toolchain) -> Iterator[federation.FederationState]:
    state = federation.up(default_federation(2), toolchain, name=E2E_FEDERATION, log=print)
    try:
        yield state
    finally:
        federation.down(E2E_FEDERATION, toolchain, log=print)


@pytest.fixture(scope="session")
def clusters(fed: federation.FederationState) -> Iterator[dict[str, Cluster]]:
    opened = {
        info.name: Cluster(info, federation.api_client(info.kubeconfig)) for info in fed.clusters
    }
    try:
        yield opened
    finally:
        for cluster in opened.values():
            cluster.api.close()


@pytest.fixture
def namespace(clusters: dict[str, Cluster]) -> Iterator[str]:
    """A fresh namespace of the same name in every cluster, deleted after the test."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    for cluster in clusters.values():
        cluster.core.create_namespace(
            {"metadata": {"name": name, "labels": {"suanli.io/e2e": "true"}}}
        )
    try:
        yield name
    finally:
        for cluster in clusters.values():
            cluster.core.delete_namespace(name, propagation_policy="Background")
