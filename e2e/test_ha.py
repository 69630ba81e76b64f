"""Two operator replicas with Kopf peering: the standby finishes the work of a dead active one."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

from kubernetes import client

from e2e.kube import Cluster
from e2e.tenant import Tenant, compute_job
from suanli.devenv import install
from suanli.devenv.operator_process import OperatorProcess
from suanli.devenv.waiting import TIMEOUTS, wait_for

PEERING = "e2e-ha"
LIFETIME = 10  # seconds; the production default is 60


def test_the_standby_takes_over_when_the_active_replica_dies(
    hub: Cluster,
    members_joined: list[str],
    session_operator_paused: None,
    namespace: str,
    tmp_path: Path,
) -> None:
    install.install_peering(hub.api, PEERING)
    common = ("--peering", PEERING, "--peering-lifetime", str(LIFETIME))
    active = OperatorProcess(hub.info.kubeconfig, tmp_path / "active", *common, "--priority", "100")
    # In a cluster both replicas sit behind one webhook Service; here only the active one
    # owns the webhook configuration, and the standby's job is the dispatch work.
    standby = OperatorProcess(
        hub.info.kubeconfig,
        tmp_path / "standby",
        *common,
        "--priority",
        "50",
        "--managed-webhook-config",
        "",
    )
    active.start()
    peerings = client.CustomObjectsApi(hub.api)

    def active_announced() -> bool:
        found = peerings.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", PEERING)
        records = (found.get("status") or {}).values()
        return any(record.get("priority") == 100 for record in records)

    # As in a rollout: the standby comes up while the active replica is known to be alive.
    wait_for(active_announced, timeout=TIMEOUTS.api_ready, what="the active replica's record")
    standby.start()
    try:
        tenant = Tenant(hub, namespace)
        names = [f"ha-{index}" for index in range(4)]
        for name in names:
            tenant.submit(compute_job(name, gpus=2, models=["H100"], run_for="8s"))
        for name in names:
            tenant.wait_phase(name, "Running", timeout=TIMEOUTS.job_complete)
        # The standby stood by: it dispatched none of the jobs (the active one did).
        assert f"dispatching {namespace}/" in active.log(tail=None)
        assert f"dispatching {namespace}/" not in standby.log(tail=None)

        active.kill()
        killed = time.monotonic()
        for name in names:
            tenant.wait_phase(name, "Succeeded", timeout=TIMEOUTS.job_complete + 2 * LIFETIME)
        finished = time.monotonic() - killed
        for name in names:
            status = tenant.job(name)["status"]
            assert len(status["attempts"]) == 1, status["attempts"]  # followed, not re-run
            assert Decimal(status["chargedCost"]) > 0
        tenant.assert_ledger_balanced()
        assert "Resuming operations" in standby.log(tail=None)
        print(
            f"\nstandby finished the dead active's jobs {finished:.1f}s after the SIGKILL "
            f"(peering lifetime {LIFETIME}s)"
        )
    finally:
        active.stop()
        standby.stop()
