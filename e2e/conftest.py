"""Fixtures for tests on real control planes.

One federation (hub + 2 members, kwok provider) serves the whole session; it is started from the
project's own toolchain and stopped at the end, and the session fails if any of its processes
outlives it. Each test gets fresh namespaces so tests never see each other's objects. suanli's
CRDs and RBAC roles are installed once; the operator runs as a real process when a test asks
for it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.kube import Cluster
from suanli.devenv import federation, install
from suanli.devenv.operator_process import OperatorProcess, stop_detached
from suanli.devenv.providers import is_alive
from suanli.devenv.toolchain import HELM, Toolchain, ensure_built, ensure_toolchain
from suanli.devenv.topology import default_federation
from suanli.kits.waiting import TIMEOUTS, wait_for

# One federation per test session, so concurrent sessions (a developer's and CI's, or two
# developers' on one machine) never stop each other's clusters.
E2E_FEDERATION = f"e2e-{os.getpid()}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def toolchain() -> Toolchain:
    tools = ensure_toolchain()
    ensure_built(HELM)  # the chart tests install the chart with helm
    return tools


def _clean_up_abandoned(toolchain: Toolchain) -> None:
    """Stop federations of earlier sessions that died without tearing down."""
    root = federation.federation_dir(E2E_FEDERATION).parent
    for directory in root.glob("e2e-*") if root.exists() else []:
        owner = directory.name.rsplit("-", 1)[-1]
        if owner.isdigit() and not is_alive(int(owner)):
            stop_detached(directory / "operator")  # one `suanli dev up` started there
            federation.down(directory.name, toolchain, log=print)


@pytest.fixture(scope="session")
def fed(toolchain: Toolchain) -> Iterator[federation.FederationState]:
    _clean_up_abandoned(toolchain)
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
    """A MemberCluster on the hub for each member, with a Secret holding a kubeconfig of the
    hub's least-privilege identity there (applied as the member's admin would)."""
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
        # Short, so the failover tests see members lost and jobs moved within seconds.
        "--member-grace",
        "6",
        "--unschedulable-timeout",
        "6",
        # Short, so a rotated member kubeconfig is picked up within seconds.
        "--kubeconfig-check-interval",
        "2",
        # Short, so a programme's statements follow its records within a second or two.
        "--statement-interval",
        "1",
        # Short, so a planted orphan is swept, and a copy's source re-read, within seconds.
        "--orphan-sweep-interval",
        "3",
        "--tenant-data-sync-interval",
        "2",
        *LEASE_ARGS,
    )
    process.start()
    _SESSION_OPERATORS.append(process)
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
        _SESSION_OPERATORS.remove(process)
        process.stop()
        print(process.log()[-3000:])


LEASE_ARGS = ("--lease-duration", "4", "--lease-renew-deadline", "3", "--lease-retry", "1")
"""Short admission Lease timings, so a replica takes over from a killed one within seconds."""
_SESSION_OPERATORS: list[OperatorProcess] = []
SESSION_WEBHOOK = "suanli.io"  # the webhook configurations `suanli run` manages


@pytest.fixture(scope="module")
def session_operator_paused() -> Iterator[None]:
    """Stop the session's operator (if one runs) for a module that runs an operator of its own.

    Two operators without peering would both dispatch every job. The caller must also set the
    session operator's webhook configuration aside: it fails closed while its process is down.
    """
    paused = [process for process in _SESSION_OPERATORS if process.running]
    for process in paused:
        process.stop()
        # Its webhook configurations are re-made when the operator restarts. The validating
        # one fails closed; the mutating one fails open, but each create would still call it.
        admission = client.AdmissionregistrationV1Api(federation.api_client(process.kubeconfig))
        with contextlib.suppress(ApiException):
            admission.delete_validating_webhook_configuration(SESSION_WEBHOOK)
        with contextlib.suppress(ApiException):
            admission.delete_mutating_webhook_configuration(SESSION_WEBHOOK)
    try:
        yield
    finally:
        for process in paused:
            process.start()


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
