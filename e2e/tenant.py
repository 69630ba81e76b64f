"""A tenant's view of the hub for e2e tests: a namespace with a voucher, jobs, waits."""

from __future__ import annotations

import datetime
import json
import subprocess
from decimal import Decimal
from typing import Any

from kubernetes import client

from e2e.kube import Cluster, kubectl
from suanli.devenv.manifests import RUN_DURATION_ANNOTATION
from suanli.kits.waiting import TIMEOUTS, wait_for

GROUP, VERSION = "suanli.io", "v1alpha1"


def voucher(name: str, amount: str, **spec: Any) -> dict[str, Any]:
    """A VoucherQuota valid from yesterday for 30 days; ``spec`` adds or overrides fields."""
    now = datetime.datetime.now(datetime.UTC)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VoucherQuota",
        "metadata": {"name": name},
        "spec": {
            "amount": amount,
            "currency": "CNY",
            "validFrom": (now - datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "validUntil": (now + datetime.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **spec,
        },
    }


def compute_job(
    name: str,
    *,
    voucher_name: str = "budget",
    gpus: int = 1,
    replicas: int = 1,
    models: list[str] | None = None,
    run_for: str = "3s",
    **spec: Any,
) -> dict[str, Any]:
    """A ComputeJob whose pods run ``run_for`` on kwok; ``spec`` adds or overrides fields."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ComputeJob",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "gpusPerReplica": gpus,
            "gpuModels": models or [],
            "maxRuntime": "1h",
            "voucherRef": {"name": voucher_name},
            "template": {
                "metadata": {"annotations": {RUN_DURATION_ANNOTATION: run_for}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "registry.example/train:1"}],
                },
            },
            **spec,
        },
    }


def member_status(hub: Cluster, member: str) -> dict[str, Any]:
    """The MemberCluster's status, as the operator last wrote it."""
    body = client.CustomObjectsApi(hub.api).get_cluster_custom_object(
        GROUP, VERSION, "memberclusters", member
    )
    status: dict[str, Any] = body.get("status") or {}
    return status


def member_free_gpus(hub: Cluster, member: str, model: str) -> int | None:
    """Free GPUs of ``model`` as the MemberCluster's status reports them."""
    for entry in member_status(hub, member).get("gpus", []):
        if entry["model"] == model:
            return int(entry["free"])
    return None


def wait_member_free_gpus(hub: Cluster, member: str, model: str, free: int) -> None:
    """Wait until the member's status reports ``free`` GPUs of ``model``."""
    wait_for(
        lambda: member_free_gpus(hub, member, model) == free,
        timeout=TIMEOUTS.job_complete,
        what=f"{member}'s status to report {free} {model} free",
    )


def tenant_identity(hub: Cluster, namespace: str) -> str:
    """A ServiceAccount of ``namespace`` bound to ``suanli-tenant``, as a platform engineer
    gives a tenant access; returns kubectl's ``--as`` argument for acting as it."""
    hub.core.create_namespaced_service_account(namespace, {"metadata": {"name": "tenant"}})
    client.RbacAuthorizationV1Api(hub.api).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "tenant"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "suanli-tenant",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": namespace}],
        },
    )
    return f"--as=system:serviceaccount:{namespace}:tenant"


def apply_as_tenant(
    hub: Cluster, namespace: str, body: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """``kubectl apply`` of ``body`` in ``namespace`` as its tenant (:func:`tenant_identity`),
    as the tenant types it: the result, refused or not, with admission's warnings on stderr."""
    return kubectl(
        hub,
        f"--as=system:serviceaccount:{namespace}:tenant",
        f"--namespace={namespace}",
        "apply",
        "-f",
        "-",
        stdin=json.dumps(body),
        check=False,
    )


class Tenant:
    """One namespace on the hub with a generous voucher named "budget"."""

    def __init__(self, hub: Cluster, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(hub.api)
        self.namespace = namespace
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "voucherquotas", voucher("budget", "1000000.00")
        )

    def submit(self, body: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "computejobs", body
        )

    def job(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "computejobs", name
        )
        return result

    def jobs(self) -> list[dict[str, Any]]:
        listed = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "computejobs"
        )
        items: list[dict[str, Any]] = listed["items"]
        return items

    def voucher_status(self) -> dict[str, Any]:
        body = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "voucherquotas", "budget"
        )
        status: dict[str, Any] = body.get("status") or {}
        return status

    def wait_phase(self, name: str, *phases: str, timeout: float) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.job(name)
            return job if (job.get("status") or {}).get("phase") in phases else None

        result: dict[str, Any] = wait_for(
            reached, timeout=timeout, what=f"{name} to reach {'/'.join(phases)}"
        )
        return result

    def assert_ledger_balanced(self) -> None:
        """spent equals the sum of the jobs' charges; nothing stays reserved."""

        def balanced() -> dict[str, Any] | None:
            status = self.voucher_status()
            charges = sum(
                (Decimal((j.get("status") or {}).get("chargedCost", "0")) for j in self.jobs()),
                Decimal(0),
            )
            spent = Decimal(status.get("spent", "-1"))
            return status if spent == charges and Decimal(status["reserved"]) == 0 else None

        try:
            wait_for(balanced, timeout=TIMEOUTS.condition_stable, what="the voucher to balance")
        except AssertionError:
            status = self.voucher_status()
            charges = {
                j["metadata"]["name"]: (j.get("status") or {}).get("chargedCost")
                for j in self.jobs()
            }
            raise AssertionError(
                f"spent {status.get('spent')}, reserved {status.get('reserved')}, ledger "
                f"{status.get('ledger')}, jobs' charges {charges}"
            ) from None
