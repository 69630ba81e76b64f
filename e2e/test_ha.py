"""Two operator replicas and one admission Lease: the standby takes over from a killed leader in
the middle of a burst, admits no more than the voucher affords, and runs each job once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.conftest import LEASE_ARGS
from e2e.kube import Cluster
from e2e.tenant import GROUP, VERSION, Tenant, compute_job, voucher
from suanli.api.names import JOB_UID_LABEL, SYSTEM_NAMESPACE
from suanli.devenv.operator_process import OperatorProcess
from suanli.kits.waiting import TIMEOUTS, wait_for

H100_HOUR = Decimal("28.00")  # the worst case of one 1-GPU H100 job of maxRuntime 1h
AFFORDABLE = 24  # fewer than member-a's H100s, so every admitted job runs at once
SUBMISSIONS = 200
KILL_AFTER = 12  # answered creates before the leader is killed
RETRY_UNTIL = 150.0  # seconds a submitter keeps retrying a create the webhook could not decide


def _lease_holder(hub: Cluster) -> str:
    lease = client.CoordinationV1Api(hub.api).read_namespaced_lease(
        "suanli-admission", SYSTEM_NAMESPACE
    )
    return str(lease.spec.holder_identity or "")


def _remote_copies(clusters: dict[str, Cluster]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for name, cluster in clusters.items():
        if name != "hub":
            for job in cluster.batch.list_job_for_all_namespaces(
                label_selector="app.kubernetes.io/managed-by=suanli"
            ).items:
                counts[job.metadata.labels[JOB_UID_LABEL]] += 1
    return counts


class Burst:
    """Submitters that retry what the webhook could not decide (down, or not leading) and
    take a refusal by the voucher as final, as a careful client would."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self.admitted: list[str] = []
        self.refused: list[str] = []
        self.retries = 0
        self.answered = threading.Semaphore(0)
        self._lock = threading.Lock()

    def submit(self, index: int) -> None:
        name = f"burst-{index:03d}"
        # Runs until the test ends: a finished job would give back its hold, and the voucher
        # would rightly afford more.
        body = compute_job(name, voucher_name="burst", models=["H100"], run_for="1h")
        deadline = time.monotonic() + RETRY_UNTIL
        while True:
            try:
                self.tenant.submit(body)
                outcome = self.admitted
            except ApiException as error:
                text = str(error.body)
                if error.status == 409 and "already exists" in text:
                    outcome = self.admitted  # stored by an earlier try whose answer was lost
                elif error.status == 403 and "cannot cover this job" in text:
                    outcome = self.refused
                elif time.monotonic() < deadline:
                    with self._lock:
                        self.retries += 1
                    time.sleep(0.5)
                    continue
                else:
                    raise
            with self._lock:
                outcome.append(name)
            self.answered.release()
            return


def test_the_standby_takes_over_a_burst_from_a_killed_leader(
    hub: Cluster,
    clusters: dict[str, Cluster],
    members_joined: list[str],
    session_operator_paused: None,
    namespace: str,
    tmp_path: Path,
) -> None:
    leader = OperatorProcess(hub.info.kubeconfig, tmp_path / "leader", *LEASE_ARGS)
    standby = OperatorProcess(hub.info.kubeconfig, tmp_path / "standby", *LEASE_ARGS)
    leader.start()
    standby.start(admitting=False)
    try:
        assert leader.admitting and not standby.admitting
        wait_for(
            lambda: "standing by" in standby.log(tail=None),
            timeout=TIMEOUTS.api_ready,
            what="the second replica to stand by",
        )
        tenant = Tenant(hub, namespace)
        amount = H100_HOUR * AFFORDABLE
        client.CustomObjectsApi(hub.api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "voucherquotas", voucher("burst", f"{amount:.2f}")
        )
        burst = Burst(tenant)

        def kill_mid_burst() -> None:
            for _ in range(KILL_AFTER):
                burst.answered.acquire()
            leader.kill()

        killer = threading.Thread(target=kill_mid_burst)
        killer.start()
        with ThreadPoolExecutor(max_workers=20) as pool:
            list(pool.map(burst.submit, range(SUBMISSIONS)))
        killer.join()
        assert not leader.running
        standby.wait_admitting()
        assert _lease_holder(hub) != "" and "leads admission now" in standby.log(tail=None)

        # Exactly what the voucher affords was admitted, across both leaders.
        stored = sorted(job["metadata"]["name"] for job in tenant.jobs())
        assert stored == sorted(burst.admitted)
        assert len(stored) == AFFORDABLE, (len(stored), burst.retries)
        assert len(burst.refused) == SUBMISSIONS - AFFORDABLE

        # Every admitted job runs, once; the voucher records exactly their holds.
        jobs = [
            tenant.wait_phase(name, "Running", timeout=TIMEOUTS.job_complete) for name in stored
        ]
        uids = {job["metadata"]["uid"] for job in jobs}
        copies = _remote_copies(clusters)
        assert {uid: copies[uid] for uid in uids} == dict.fromkeys(uids, 1)
        assert all(len(job["status"]["attempts"]) == 1 for job in jobs)
        _assert_holds(tenant, uids, amount)
        print(
            f"\n{len(stored)} of {SUBMISSIONS} admitted across the takeover "
            f"({burst.retries} retried creates while no leader answered)"
        )
    finally:
        leader.stop()
        standby.stop()


def _assert_holds(tenant: Tenant, uids: set[str], amount: Decimal) -> None:
    def recorded() -> dict[str, Any] | None:
        status = tenant.custom.get_namespaced_custom_object(
            GROUP, VERSION, tenant.namespace, "voucherquotas", "burst"
        ).get("status", {})
        entries = {entry["uid"] for entry in (status.get("ledger") or {}).get("entries", [])}
        return status if entries == uids else None

    status = wait_for(recorded, timeout=TIMEOUTS.condition_stable, what="the holds recorded")
    assert Decimal(status["reserved"]) == amount and Decimal(status["remaining"]) == 0, status
