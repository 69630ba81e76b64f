"""Money on real control planes: charged once, by uid, recorded for the auditor, whatever fails.

- Creates refused as AlreadyExists (the name of a finished job) hold nothing for long and never
  charge the finished job again.
- A hub that refuses voucher status writes for a while (a ValidatingAdmissionPolicy, the real
  admission chain) delays the charge; nothing is lost or doubled.
- Every finished attempt leaves a UsageRecord the tenant can list, which outlives the job.
- Deleting a MemberCluster with a running job charges the time it ran and leaves no copy.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.admission_faults import refusing_policy, rule
from e2e.kube import Cluster, kubectl
from e2e.tenant import GROUP, VERSION, Tenant, compute_job, tenant_identity
from suanli.devenv import install
from suanli.devenv.federation import FederationState
from suanli.devenv.operator_process import OperatorProcess
from suanli.kits.waiting import TIMEOUTS, wait_for

Obj = dict[str, Any]


@pytest.fixture
def tenant(hub: Cluster, namespace: str, operator: OperatorProcess) -> Tenant:
    return Tenant(hub, namespace)


def records(hub: Cluster, namespace: str) -> list[Obj]:
    listed = client.CustomObjectsApi(hub.api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "usagerecords"
    )
    items: list[Obj] = listed["items"]
    return items


def recorded(hub: Cluster, namespace: str) -> Decimal:
    return sum((Decimal(r["spec"]["amount"]) for r in records(hub, namespace)), Decimal(0))


def wait_balanced(tenant: Tenant, hub: Cluster, what: str) -> Obj:
    """Wait until nothing is held and spent is exactly the sum of the usage records."""

    def balanced() -> Obj | None:
        status = tenant.voucher_status()
        spent = Decimal(status.get("spent", "-1"))
        held = Decimal(status.get("reserved", "-1"))
        return status if held == 0 and spent == recorded(hub, tenant.namespace) else None

    result: Obj = wait_for(balanced, timeout=TIMEOUTS.job_complete, what=what)
    return result


def test_refused_recreates_of_a_finished_job_leave_spent_unchanged(
    tenant: Tenant, hub: Cluster
) -> None:
    body = compute_job("train", run_for="1s")
    tenant.submit(body)
    done = tenant.wait_phase("train", "Succeeded", timeout=TIMEOUTS.job_complete)
    before = wait_balanced(tenant, hub, "the first charge to land")
    assert Decimal(before["spent"]) == Decimal(done["status"]["chargedCost"]) > 0
    for _ in range(3):
        created = kubectl(
            hub,
            f"--namespace={tenant.namespace}",
            "create",
            "-f",
            "-",
            stdin=json.dumps(body),
            check=False,
        )
        assert created.returncode != 0 and "AlreadyExists" in created.stderr, created.stderr
    # Each refused create was admitted under a uid of its own: its hold is released once the
    # recount sees no job of that uid (after --hold-grace), and the finished job is not
    # charged again.
    after = wait_balanced(tenant, hub, "the refused creates' holds to be released")
    assert after["spent"] == before["spent"]
    assert len(records(hub, tenant.namespace)) == 1


@contextlib.contextmanager
def voucher_writes_refused(hub: Cluster, namespace: str) -> Iterator[None]:
    """A hub that refuses every write of the namespace's voucher statuses, until the block
    ends: a real admission policy, as a hub under a failing admission chain would answer."""
    with refusing_policy(
        hub.api,
        f"refuse-voucher-status-{namespace}",
        [rule(GROUP, "voucherquotas/status", "UPDATE", version=VERSION)],
        "fault injected by the billing e2e test",
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
    ):
        yield


def test_a_hub_refusing_voucher_writes_delays_the_charge_and_loses_nothing(
    tenant: Tenant, hub: Cluster, namespace: str
) -> None:
    tenant.submit(compute_job("steady", run_for="2s"))
    wait_for(
        lambda: Decimal(tenant.voucher_status().get("reserved", "0")) > 0,
        timeout=TIMEOUTS.condition_stable,
        what="the admission's hold",
    )
    with voucher_writes_refused(hub, namespace):
        # The job ends while no voucher write can land: the job says what it cost and its
        # record exists, but the voucher still holds the whole hold and has spent nothing.
        done = tenant.wait_phase("steady", "Succeeded", timeout=TIMEOUTS.job_complete)
        charge = Decimal(done["status"]["chargedCost"])
        assert wait_for(
            lambda: recorded(hub, namespace) == charge > 0,
            timeout=TIMEOUTS.condition_stable,
            what="the usage record",
        )
        stuck = tenant.voucher_status()
        assert Decimal(stuck["spent"]) == 0
        assert Decimal(stuck["reserved"]) > 0
    # The fault clears: a retry lands, and the charge is made once.
    after = wait_balanced(tenant, hub, "the delayed charge to land")
    assert Decimal(after["spent"]) == charge


def test_a_finished_jobs_usage_record_is_listed_by_the_tenant_and_outlives_the_job(
    tenant: Tenant, hub: Cluster, namespace: str
) -> None:
    tenant.submit(compute_job("audited", models=["A800", "H100"], run_for="2s"))
    done = tenant.wait_phase("audited", "Succeeded", timeout=TIMEOUTS.job_complete)
    as_tenant = (tenant_identity(hub, namespace), f"--namespace={namespace}")
    listed = kubectl(hub, *as_tenant, "get", "usagerecords", "-o", "json")
    (record,) = json.loads(listed.stdout)["items"]
    spec = record["spec"]
    attempt = done["status"]["attempts"][-1]
    assert spec["job"] == {"name": "audited", "uid": done["metadata"]["uid"]}
    assert (spec["cluster"], spec["gpuModel"], spec["attempt"]) == (
        attempt["cluster"],
        attempt["gpuModel"],
        1,
    )
    assert spec["amount"] == done["status"]["chargedCost"]
    assert spec["pricePerGPUHour"] == attempt["pricePerGPUHour"]
    # The printer columns a tenant sees.
    table = kubectl(hub, *as_tenant, "get", "usage").stdout
    assert "audited" in table and spec["amount"] in table
    # Nobody but the operator writes records: not the tenant...
    patched = kubectl(
        hub,
        *as_tenant,
        "patch",
        "usagerecord",
        record["metadata"]["name"],
        "--type=merge",
        "-p",
        '{"spec":{"amount":"0.00"}}',
        check=False,
    )
    assert patched.returncode != 0 and "forbidden" in patched.stderr.lower()
    # ...and not even an admin: the schema refuses any change.
    with pytest.raises(ApiException) as refused:
        client.CustomObjectsApi(hub.api).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "usagerecords",
            record["metadata"]["name"],
            {"spec": {"amount": "0.00"}},
        )
    assert "immutable" in str(refused.value.body)
    tenant.custom.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "computejobs", "audited"
    )
    wait_for(lambda: not tenant.jobs(), timeout=TIMEOUTS.condition_stable, what="the job to go")
    assert [r["metadata"]["name"] for r in records(hub, namespace)] == [record["metadata"]["name"]]
    assert wait_balanced(tenant, hub, "the ledger after the delete")["spent"] == spec["amount"]


def test_deleting_a_member_with_a_running_job_charges_the_time_and_leaves_no_copy(
    tenant: Tenant,
    hub: Cluster,
    clusters: dict[str, Cluster],
    fed: FederationState,
    namespace: str,
) -> None:
    tenant.submit(compute_job("stranded", models=["A800"], run_for="1h"))
    member_b = clusters["member-b"]
    wait_for(
        lambda: tenant.job("stranded").get("status", {}).get("phase") == "Running",
        timeout=TIMEOUTS.job_complete,
        what="the job to run on member-b",
    )
    wait_for(
        lambda: (
            (
                datetime.now(UTC)
                - datetime.fromisoformat(
                    tenant.job("stranded")["status"]["attempts"][0]["startTime"]
                )
            ).total_seconds()
            >= 2
        ),
        timeout=TIMEOUTS.condition_stable,
        what="some GPU time to charge",
    )
    custom = client.CustomObjectsApi(hub.api)
    try:
        custom.delete_cluster_custom_object(GROUP, VERSION, "memberclusters", "member-b")

        def gone() -> bool:
            try:
                custom.get_cluster_custom_object(GROUP, VERSION, "memberclusters", "member-b")
            except ApiException as error:
                return error.status == 404
            return False

        wait_for(gone, timeout=TIMEOUTS.job_complete, what="the MemberCluster to be removed")
        # Its copy is gone from the member, the time it ran is recorded and charged, and the
        # job (A800 only, which no other member has) waits to be placed again.
        assert member_b.batch.list_namespaced_job(f"suanli-{namespace}").items == []
        (record,) = records(hub, namespace)
        assert record["spec"]["cluster"] == "member-b"
        assert record["spec"]["endReason"] == "MemberRemoved"
        assert int(record["spec"]["gpuSeconds"]) >= 2
        job = tenant.job("stranded")
        attempt = job["status"]["attempts"][0]
        assert (attempt["reason"], attempt["charge"]) == ("MemberRemoved", record["spec"]["amount"])
        assert job["status"]["phase"] == "Queued"
    finally:
        install.join_members(hub.api, [m for m in fed.members if m.name == "member-b"])
        wait_for(
            lambda: any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in custom.get_cluster_custom_object(
                    GROUP, VERSION, "memberclusters", "member-b"
                )
                .get("status", {})
                .get("conditions", [])
            ),
            timeout=TIMEOUTS.api_ready,
            what="member-b to be joined again",
        )
    # Back in the federation, member-b runs the job again: a second attempt.
    wait_for(
        lambda: len(tenant.job("stranded").get("status", {}).get("attempts", [])) == 2,
        timeout=TIMEOUTS.job_complete,
        what="the job to be placed on member-b again",
    )
