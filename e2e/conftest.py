"""Fixtures for tests on real control planes.

One federation (hub + 2 members, kwok provider) serves the whole session; it is started from the
project's own toolchain and stopped at the end, and the session fails if any of its processes
outlives it. Each test gets fresh namespaces so tests never see each other's objects. suanli's
CRDs and RBAC roles are installed once; the operator runs as a real process when a test asks
for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client

from e2e.kube import Cluster
from suanli.devenv import federation, install
from suanli.devenv.operator_process import OperatorProcess
from suanli.devenv.toolchain import Toolchain, ensure_toolchain
from suanli.devenv.topology import default_federation
from suanli.devenv.waiting import TIMEOUTS, wait_for

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


@pytest.fixture(scope="session")
def hub(clusters: dict[str, Cluster]) -> Cluster:
    """The hub with suanli's CRDs (Established), RBAC roles and system namespace installed."""
    hub = clusters["hub"]
    install.install_api(hub.api)
    return hub


@pytest.fixture(scope="session")
def members_joined(hub: Cluster, fed: federation.FederationState) -> list[str]:
    """A MemberCluster on the hub for each member, with its real kubeconfig in a Secret."""
    install.join_members(hub.api, fed.members)
    return [member.name for member in fed.members]


@pytest.fixture(scope="session")
def operator(
    hub: Cluster, members_joined: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator, running; tests that stop it must start it again before they end."""
    process = OperatorProcess(
        hub.info.kubeconfig,
        tmp_path_factory.mktemp("operator"),
        "--recount-interval",
        "3",
        "--hold-grace",
        "5",
    )
    process.start()
    admission = client.AdmissionregistrationV1Api(hub.api)
    wait_for(
        lambda: any(
            c.metadata.name == "suanli.io"
            for c in admission.list_validating_webhook_configuration().items
        ),
        timeout=TIMEOUTS.api_ready,
        what="the operator to register its webhook",
    )
    try:
        yield process
    finally:
        process.stop()
        print(process.log()[-3000:])


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
