"""`suanli dev up` brings back a local federation whose operator was killed, as a new user
would run it: the jobs in flight finish and are charged once.

Its own federation (hub + one member), started and stopped with the real CLI, so the test
exercises exactly what a user runs: `suanli dev up`, SIGKILL of the operator, `suanli dev up`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from e2e.kube import Cluster
from e2e.tenant import GROUP, VERSION, Tenant, compute_job
from e2e.test_billing import records
from suanli.devenv import federation
from suanli.devenv.operator_process import PID_FILE
from suanli.devenv.providers import is_alive
from suanli.devenv.toolchain import Toolchain
from suanli.kits.waiting import TIMEOUTS, wait_for

# Named like the session's federation (e2e-...-<pid>), so an abandoned one is cleaned up.
FEDERATION = f"e2e-recover-{os.getpid()}"
Obj = dict[str, Any]


def dev(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "suanli", "dev", *args, "--name", FEDERATION],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


@pytest.fixture(scope="module")
def local_federation(toolchain: Toolchain) -> Iterator[federation.FederationState]:
    started = dev("up", "--members", "1")
    try:
        assert started.returncode == 0, started.stderr
        state = federation.load_state(FEDERATION)
        assert state is not None
        yield state
    finally:
        stopped = dev("down")
        assert stopped.returncode == 0, stopped.stderr


def operator_pid(state: federation.FederationState) -> int:
    return int((Path(state.directory) / "operator" / PID_FILE).read_text())


def test_dev_up_brings_back_a_killed_operator_and_jobs_are_charged_once(
    local_federation: federation.FederationState,
) -> None:
    hub = Cluster(local_federation.hub, federation.api_client(local_federation.hub.kubeconfig))
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    hub.core.create_namespace({"metadata": {"name": namespace}})
    tenant = Tenant(hub, namespace)
    names = ("short", "long")
    tenant.submit(compute_job("short", run_for="5s"))
    tenant.submit(compute_job("long", run_for="40s"))
    for name in names:
        tenant.wait_phase(name, "Running", timeout=TIMEOUTS.job_complete)

    killed = operator_pid(local_federation)
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: not is_alive(killed), timeout=TIMEOUTS.api_ready, what="the operator to die")

    again = dev("up", "--members", "1")
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    restarted = operator_pid(local_federation)
    assert restarted != killed
    assert is_alive(restarted)

    done = {
        name: tenant.wait_phase(name, "Succeeded", timeout=TIMEOUTS.job_complete) for name in names
    }

    # Charged once: one usage record per job, each job's charge its record's amount, the
    # voucher's spent their sum, nothing left reserved.
    def settled() -> list[Obj] | None:
        found = records(hub, namespace)
        status = tenant.voucher_status()
        if len(found) != len(names) or Decimal(status.get("reserved", "-1")) != 0:
            return None
        return found

    found: list[Obj] = wait_for(settled, timeout=TIMEOUTS.job_complete, what="both jobs charged")
    charged = {r["spec"]["job"]["name"]: Decimal(r["spec"]["amount"]) for r in found}
    assert charged == {name: Decimal(done[name]["status"]["chargedCost"]) for name in names}
    assert Decimal(tenant.voucher_status()["spent"]) == sum(charged.values())
    assert all(amount > 0 for amount in charged.values())


def test_dev_up_applies_the_examples_a_user_would_and_none_the_operator_writes(
    local_federation: federation.FederationState,
) -> None:
    """The example programme is there to try; the example usage record and statement only
    show what the operator writes, and a fake one would be read as a real charge."""
    with federation.api_client(local_federation.hub.kubeconfig) as api:
        custom = client.CustomObjectsApi(api)
        programmes = custom.list_cluster_custom_object(GROUP, VERSION, "voucherprograms")
        statements = custom.list_cluster_custom_object(GROUP, VERSION, "voucherstatements")
        usage = custom.list_cluster_custom_object(GROUP, VERSION, "usagerecords")
    assert "shanghai-2026" in [p["metadata"]["name"] for p in programmes["items"]]
    example_statement = "shanghai-2026-2026-03-center-member-a"
    assert example_statement not in [s["metadata"]["name"] for s in statements["items"]]
    example_record = "llm-finetune-6f1c2a3e-5b7d-4c1e-9a0b-2d3e4f5a6b7c-1"
    assert example_record not in [r["metadata"]["name"] for r in usage["items"]]
