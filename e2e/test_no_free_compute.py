"""No free compute, on the federation's real control planes: what a job would take without paying
is refused at ``kubectl apply``; a member that refuses a workload costs the tenant nothing; a job
deleted while its workload is being made leaves nothing on the member; a grace of days is held
to the platform's; a source that gains a device variable is not copied; and what the hub no
longer has is swept from the members."""

from __future__ import annotations

import datetime
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e import operator_metrics
from e2e.admission_faults import WebhookServer, refusing_policy, rule
from e2e.kube import Cluster
from e2e.tenant import (
    GROUP,
    VERSION,
    Tenant,
    apply_as_tenant,
    compute_job,
    tenant_identity,
)
from suanli.api.names import COPY_LABEL, JOB_NAMESPACE_LABEL, JOB_UID_LABEL
from suanli.devenv.operator_process import OperatorProcess
from suanli.kits.waiting import TIMEOUTS, wait_for
from suanli.members.workload import MANAGED_BY_LABEL

SPEC = "spec.template.spec"
REFUSED_HERE = "this centre runs no Jobs of the tenant"
ORPHANS = "suanli_orphans_removed_total"


@pytest.fixture
def tenant(hub: Cluster, namespace: str, operator: OperatorProcess) -> Tenant:
    tenant_identity(hub, namespace)
    return Tenant(hub, namespace)


def _with_main(body: dict[str, Any], **container: Any) -> dict[str, Any]:
    body["spec"]["template"]["spec"]["containers"][0].update(container)
    return body


def _claim(**extra: Any) -> dict[str, Any]:
    spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    return {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {**spec, **extra}}}}


def _refusals() -> list[Any]:
    def big_gang() -> dict[str, Any]:
        return compute_job("big", gpus=16, models=["H100"])

    def l40s_by_eight() -> dict[str, Any]:
        return compute_job("l40s", gpus=8, models=["L40S"])

    def rdma() -> dict[str, Any]:
        return _with_main(compute_job("rdma"), resources={"limits": {"example.com/rdma": "1"}})

    def bound_claim() -> dict[str, Any]:
        body = compute_job("claim")
        body["spec"]["template"]["spec"]["volumes"] = [_claim(volumeName="pv-of-another-tenant")]
        return body

    def cloned_claim() -> dict[str, Any]:
        body = compute_job("clone")
        source = {"kind": "PersistentVolumeClaim", "name": "theirs"}
        body["spec"]["template"]["spec"]["volumes"] = [_claim(dataSource=source)]
        return body

    def csi_secret() -> dict[str, Any]:
        body = compute_job("csi")
        body["spec"]["template"]["spec"]["volumes"] = [
            {
                "name": "data",
                "csi": {"driver": "fuse.example.com", "nodePublishSecretRef": {"name": "creds"}},
            }
        ]
        return body

    def device_prefix() -> dict[str, Any]:
        return _with_main(
            compute_job("prefix"), envFrom=[{"prefix": "NVIDIA_", "secretRef": {"name": "devices"}}]
        )

    return [
        pytest.param(big_gang, ["spec.gpusPerReplica", "fit on no member"], id="gang-of-16"),
        pytest.param(l40s_by_eight, ["spec.gpusPerReplica", "at most 4 on a node"], id="8-L40S"),
        pytest.param(rdma, [f"{SPEC}.containers[0].resources.limits[example.com/rdma]"], id="rdma"),
        pytest.param(
            bound_claim,
            [f"{SPEC}.volumes[0].ephemeral.volumeClaimTemplate.spec.volumeName"],
            id="ephemeral-bound",
        ),
        pytest.param(
            cloned_claim,
            [f"{SPEC}.volumes[0].ephemeral.volumeClaimTemplate.spec.dataSource"],
            id="ephemeral-clone",
        ),
        pytest.param(csi_secret, [f"{SPEC}.volumes[0].csi.nodePublishSecretRef"], id="csi-secret"),
        pytest.param(
            device_prefix,
            [f"{SPEC}.containers[0].envFrom[0].secretRef.name", "NVIDIA_VISIBLE_DEVICES"],
            id="envFrom-prefix",
        ),
    ]


@pytest.mark.parametrize(("build", "named"), _refusals())
def test_what_a_job_would_take_unpaid_is_refused_at_apply_naming_the_field(
    tenant: Tenant, hub: Cluster, build: Any, named: list[str]
) -> None:
    # Every key of this Secret is harmless alone; under the prefix NVIDIA_ one selects GPUs.
    hub.core.create_namespaced_secret(
        tenant.namespace,
        {"metadata": {"name": "devices"}, "stringData": {"VISIBLE_DEVICES": "all", "HOME": "/"}},
    )
    applied = apply_as_tenant(hub, tenant.namespace, build())
    assert applied.returncode != 0, applied.stdout
    assert "denied the request" in applied.stderr, applied.stderr
    for text in named:
        assert text in applied.stderr, f"{text!r} not in: {applied.stderr}"
    assert tenant.jobs() == []


@pytest.fixture
def member_a_allows_rdma(hub: Cluster) -> Iterator[None]:
    custom = client.CustomObjectsApi(hub.api)

    def allow(resources: list[str] | None) -> None:
        patch = {"spec": {"allowedResources": resources}}
        custom.patch_cluster_custom_object(GROUP, VERSION, "memberclusters", "member-a", patch)

    allow(["example.com/rdma"])
    try:
        yield
    finally:
        allow(None)


def test_a_member_may_not_declare_an_accelerator_as_an_allowed_resource(hub: Cluster) -> None:
    with pytest.raises(ApiException) as refused:
        client.CustomObjectsApi(hub.api).patch_cluster_custom_object(
            GROUP,
            VERSION,
            "memberclusters",
            "member-a",
            {"spec": {"allowedResources": ["example.com/rdma", "nvidia.com/gpu"]}},
        )
    assert "spec.allowedResources[1]" in str(refused.value.body)
    assert "accelerator resource" in str(refused.value.body)


def test_a_job_asking_for_an_extended_resource_goes_only_to_a_member_declaring_it(
    tenant: Tenant, hub: Cluster, member_a_allows_rdma: None
) -> None:
    # The A800s of member-b cost less than member-a's H100s, but member-b does not declare the
    # resource: the job goes to member-a. (Admission reads members from its cache: retried until
    # it has seen the change.)
    body = _with_main(
        compute_job("rdma", models=["A800", "H100"], run_for="1s"),
        resources={"limits": {"example.com/rdma": "1"}},
    )

    def admitted() -> bool:
        return apply_as_tenant(hub, tenant.namespace, body).returncode == 0

    wait_for(admitted, timeout=TIMEOUTS.condition_stable, what="the job to be admitted")
    placed = wait_for(
        lambda: (tenant.job("rdma").get("status") or {}).get("attempts"),
        timeout=TIMEOUTS.job_complete,
        what="the job to be placed",
    )
    assert {attempt["cluster"] for attempt in placed} == {"member-a"}
    dispatched = next(
        c for c in tenant.job("rdma")["status"]["conditions"] if c["type"] == "Dispatched"
    )
    assert "spec.allowedResources" in dispatched["message"]  # why member-b was passed over


def _remote_jobs(member: Cluster, namespace: str) -> list[Any]:
    return [
        job
        for job in member.batch.list_namespaced_job(f"suanli-{namespace}").items
        if job.metadata.deletion_timestamp is None
    ]


def _records(hub: Cluster, namespace: str) -> list[dict[str, Any]]:
    listed = client.CustomObjectsApi(hub.api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "usagerecords"
    )
    items: list[dict[str, Any]] = listed["items"]
    return items


def _released(tenant: Tenant) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(
        lambda: (status := tenant.voucher_status()) and Decimal(status["reserved"]) == 0 and status,
        timeout=TIMEOUTS.job_complete,
        what="the hold to be released",
    )
    return found


def test_a_grace_of_thirty_days_is_held_to_the_platforms_and_the_charge_ends_with_it(
    tenant: Tenant, hub: Cluster, clusters: dict[str, Cluster]
) -> None:
    body = compute_job("linger", models=["H100"], run_for="1h")
    body["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 30 * 86400
    _with_main(body, lifecycle={"preStop": {"exec": {"command": ["sleep", "infinity"]}}})
    applied = apply_as_tenant(hub, tenant.namespace, body)
    assert applied.returncode == 0, applied.stderr
    assert "2592000s is above this platform's bound of 30s" in applied.stderr, applied.stderr
    assert f"{SPEC}.terminationGracePeriodSeconds" in applied.stderr

    tenant.wait_phase("linger", "Running", timeout=TIMEOUTS.job_complete)
    (remote,) = _remote_jobs(clusters["member-a"], tenant.namespace)
    assert remote.spec.template.spec.termination_grace_period_seconds == 30
    assert remote.spec.active_deadline_seconds == 3600 - 30  # its pods are gone by maxRuntime

    deleted = wait_for(lambda: _hub_now(hub), timeout=5, what="the hub's time")
    tenant.custom.delete_namespaced_custom_object(
        GROUP, VERSION, tenant.namespace, "computejobs", "linger"
    )
    wait_for(lambda: not tenant.jobs(), timeout=TIMEOUTS.job_complete, what="the job to go")
    _released(tenant)
    (record,) = _records(hub, tenant.namespace)
    ended = _seconds(record["spec"]["endTime"])
    assert deleted - 2 <= ended <= deleted + 30 + 2, record["spec"]  # never past the grace
    assert _remote_jobs(clusters["member-a"], tenant.namespace) == []


def _hub_now(hub: Cluster) -> float:
    """The hub's clock, as its API server stamps a fresh object (seconds since the epoch)."""
    name = f"clock-{uuid.uuid4().hex[:8]}"
    made = hub.core.create_namespaced_config_map("default", {"metadata": {"name": name}})
    hub.core.delete_namespaced_config_map(name, "default")
    return float(made.metadata.creation_timestamp.timestamp())


def _seconds(timestamp: str) -> float:
    return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _probe_job(namespace: str) -> dict[str, Any]:
    """A Job as the hub would make one for ``namespace``'s jobs, to create with dry-run: it
    goes through the member's admission chain, and nothing is stored."""
    return {
        "metadata": {"name": "probe", "labels": {JOB_NAMESPACE_LABEL: namespace}},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "registry.example/x:1"}],
                }
            }
        },
    }


def _admitted(member: Cluster, namespace: str) -> str | None:
    """None when the member would take the tenant's Job now; else what it said."""
    try:
        member.batch.create_namespaced_job(namespace, _probe_job(namespace), dry_run="All")
    except ApiException as error:
        return str(error.body)
    return None


@pytest.fixture
def member_b_refuses_the_tenants_jobs(
    clusters: dict[str, Cluster], namespace: str
) -> Iterator[None]:
    """An admission policy on member-b that refuses every Job of this tenant, as a centre's own
    policy might; in force when the test starts."""
    member_b = clusters["member-b"]
    with refusing_policy(
        member_b.api,
        f"refuse-{namespace}",
        [rule("batch", "jobs", "CREATE")],
        REFUSED_HERE,
        {"objectSelector": {"matchLabels": {JOB_NAMESPACE_LABEL: namespace}}},
    ):
        wait_for(
            lambda: _admitted(member_b, namespace),
            timeout=TIMEOUTS.condition_stable,
            what="member-b's policy to refuse the probe",
        )
        yield


def test_a_member_that_refuses_the_workload_costs_nothing_and_the_job_fails_released(
    tenant: Tenant, hub: Cluster, member_b_refuses_the_tenants_jobs: None
) -> None:
    # Only member-b has L40S: once it refuses, no member is left, and the job fails.
    tenant.submit(compute_job("l40s", gpus=2, models=["L40S"], run_for="1h"))
    failed = tenant.wait_phase("l40s", "Failed", timeout=TIMEOUTS.job_complete)["status"]
    assert failed["attempts"] == []  # nothing ran: no attempt, no charge
    finished = next(c for c in failed["conditions"] if c["type"] == "Finished")
    assert finished["reason"] == "DispatchFailed", finished
    assert REFUSED_HERE in finished["message"]
    assert Decimal(failed.get("chargedCost", "0")) == 0
    status = _released(tenant)
    assert Decimal(status["spent"]) == 0


class Holding:
    """A webhook's answer that holds each create (not a dry-run probe) until released, at most
    ``limit`` seconds, then allows it: a member whose API server is slow to take a Job."""

    def __init__(self, limit: float = 8.0) -> None:
        self.limit = limit
        self.release = threading.Event()
        self.held = threading.Event()
        self.probed = threading.Event()

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("dryRun"):
            self.probed.set()
        else:
            self.held.set()
            self.release.wait(self.limit)
        return {"allowed": True}


@pytest.fixture
def member_b_holds_the_tenants_jobs(
    clusters: dict[str, Cluster], namespace: str, tmp_path: Path
) -> Iterator[Holding]:
    member_b = clusters["member-b"]
    admission = client.AdmissionregistrationV1Api(member_b.api)
    hold = Holding()
    name = f"hold-{namespace}"
    with WebhookServer(tmp_path, hold) as server:
        admission.create_validating_webhook_configuration(
            server.configuration(
                name,
                [rule("batch", "jobs", "CREATE")],
                timeout=10,
                objectSelector={"matchLabels": {JOB_NAMESPACE_LABEL: namespace}},
            )
        )
        try:
            wait_for(
                lambda: _admitted(member_b, namespace) is None and hold.probed.is_set(),
                timeout=TIMEOUTS.condition_stable,
                what="member-b to call the holding webhook",
            )
            yield hold
        finally:
            hold.release.set()
            admission.delete_validating_webhook_configuration(name)


def test_a_job_deleted_while_its_workload_is_being_made_leaves_nothing_on_the_member(
    tenant: Tenant,
    hub: Cluster,
    clusters: dict[str, Cluster],
    member_b_holds_the_tenants_jobs: Holding,
) -> None:
    hook = member_b_holds_the_tenants_jobs
    hub.core.create_namespaced_secret(
        tenant.namespace, {"metadata": {"name": "hf"}, "stringData": {"HF_TOKEN": "x"}}
    )
    body = _with_main(
        compute_job("racing", gpus=2, models=["L40S"], run_for="1h"),
        envFrom=[{"secretRef": {"name": "hf"}}],
    )
    tenant.submit(body)
    assert hook.held.wait(TIMEOUTS.job_complete), "the remote create never reached member-b"
    # The copies are on the member; the Job's create is in flight. The tenant deletes the job.
    tenant.custom.delete_namespaced_custom_object(
        GROUP, VERSION, tenant.namespace, "computejobs", "racing"
    )
    wait_for(
        lambda: tenant.job("racing")["metadata"].get("deletionTimestamp"),
        timeout=TIMEOUTS.condition_stable,
        what="the deletion to be recorded",
    )
    time.sleep(1.0)  # the finalizer runs meanwhile, and waits for the launch in flight
    assert tenant.jobs(), "the job was finalized while its workload was still being made"
    hook.release.set()  # the create lands now, after the deletion
    wait_for(lambda: not tenant.jobs(), timeout=TIMEOUTS.job_complete, what="the job to go")
    member_b = clusters["member-b"]
    remote_namespace = f"suanli-{tenant.namespace}"

    def nothing_left() -> bool:
        pods = member_b.core.list_namespaced_pod(remote_namespace).items
        copies = member_b.core.list_namespaced_secret(
            remote_namespace, label_selector=f"{COPY_LABEL}=true"
        ).items
        return not _remote_jobs(member_b, tenant.namespace) and not pods and not copies

    wait_for(nothing_left, timeout=TIMEOUTS.condition_stable, what="nothing left on member-b")
    _released(tenant)


def test_a_source_that_gains_a_device_variable_is_not_copied_and_the_job_is_told(
    tenant: Tenant, hub: Cluster, clusters: dict[str, Cluster]
) -> None:
    hub.core.create_namespaced_secret(
        tenant.namespace, {"metadata": {"name": "settings"}, "stringData": {"HF_TOKEN": "x"}}
    )
    body = _with_main(
        compute_job("later", models=["H100"], run_for="1h"),
        envFrom=[{"secretRef": {"name": "settings"}}],
    )
    tenant.submit(body)
    job = tenant.wait_phase("later", "Running", timeout=TIMEOUTS.job_complete)
    member_a = clusters["member-a"]
    selector = f"{JOB_UID_LABEL}={job['metadata']['uid']},{COPY_LABEL}=true"

    def copied_keys() -> set[str]:
        (copy,) = member_a.core.list_namespaced_secret(
            f"suanli-{tenant.namespace}", label_selector=selector
        ).items
        return set(copy.data or {})

    assert copied_keys() == {"HF_TOKEN"}
    hub.core.patch_namespaced_secret(
        "settings", tenant.namespace, {"stringData": {"NVIDIA_VISIBLE_DEVICES": "all"}}
    )

    def refusal() -> Any:
        events = hub.core.list_namespaced_event(
            tenant.namespace, field_selector="reason=TenantDataRefused"
        ).items
        return events[0] if events else None

    event = wait_for(refusal, timeout=TIMEOUTS.job_complete, what="the refusal's Event")
    assert event.involved_object.name == "later" and event.type == "Warning"
    assert "NVIDIA_VISIBLE_DEVICES" in event.message
    assert copied_keys() == {"HF_TOKEN"}  # the copy kept its earlier content


def test_what_no_computejob_on_the_hub_holds_is_swept_from_the_member(
    hub: Cluster, clusters: dict[str, Cluster], namespace: str, operator: OperatorProcess
) -> None:
    member = clusters["member-a"]
    remote_namespace = f"suanli-{namespace}"
    labels = {MANAGED_BY_LABEL: "suanli", JOB_NAMESPACE_LABEL: namespace}
    member.core.create_namespace({"metadata": {"name": remote_namespace, "labels": labels}})
    orphan, lone = str(uuid.uuid4()), str(uuid.uuid4())
    before = {
        kind: operator_metrics.value(operator, ORPHANS, kind=kind, member="member-a")
        for kind in ("Job", "Service", "copy")
    }
    try:
        # A Job left by a crash (suspended: it would hold no GPUs, but the sweep need not know).
        job = {
            "metadata": {"name": "left", "labels": {**labels, JOB_UID_LABEL: orphan}},
            "spec": {
                "suspend": True,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "main", "image": "registry.example/x:1"}],
                    }
                },
            },
        }
        member.batch.create_namespaced_job(remote_namespace, job)
        member.core.create_namespaced_service(
            remote_namespace,
            {
                "metadata": {"name": "left", "labels": {**labels, JOB_UID_LABEL: orphan}},
                "spec": {"clusterIP": "None", "selector": {JOB_UID_LABEL: orphan}},
            },
        )
        member.core.create_namespaced_secret(
            remote_namespace,
            {
                "metadata": {
                    "name": "left-token",
                    "labels": {**labels, JOB_UID_LABEL: lone, COPY_LABEL: "true"},
                },
                "stringData": {"HF_TOKEN": "x"},
            },
        )

        def swept() -> bool:
            jobs = _remote_jobs(member, namespace)
            services = member.core.list_namespaced_service(remote_namespace).items
            secrets = member.core.list_namespaced_secret(
                remote_namespace, label_selector=f"{COPY_LABEL}=true"
            ).items
            return not jobs and not services and not secrets

        wait_for(swept, timeout=TIMEOUTS.condition_stable, what="the orphans to be swept")
        for kind in ("Job", "Service", "copy"):
            removed = operator_metrics.value(operator, ORPHANS, kind=kind, member="member-a")
            assert removed >= before[kind] + 1, (kind, removed)
    finally:
        try:
            member.core.delete_namespace(remote_namespace)
        except ApiException as error:
            if error.status != 404:
                raise
