"""Dispatch on kind: the operator's pod places jobs on both members through their in-network
kubeconfigs, follows them to the end and charges each exactly once."""

from __future__ import annotations

from e2e.kube import Cluster
from e2e.tenant import Tenant, compute_job
from suanli.api.names import JOB_NAME_LABEL, JOB_NAMESPACE_LABEL
from suanli.devenv import kind_install
from suanli.kits.waiting import TIMEOUTS


def test_jobs_go_to_the_member_with_their_gpu_model_and_are_charged(
    kind_clusters: dict[str, Cluster],
    suanli_installed: kind_install.Images,
    kind_namespace: str,
) -> None:
    hub = kind_clusters["hub"]
    tenant = Tenant(hub, kind_namespace)
    tenant.submit(compute_job("on-h100", models=["H100"], run_for="2s"))
    tenant.submit(compute_job("on-a800", models=["A800"], gpus=2, run_for="2s"))

    expected = {"on-h100": "member-a", "on-a800": "member-b"}
    for name, member in expected.items():
        job = tenant.wait_phase(name, "Succeeded", "Failed", timeout=TIMEOUTS.job_complete * 2)
        status = job["status"]
        assert status["phase"] == "Succeeded", status
        assert status["cluster"] == member, status
        # The remote batch Job ran in that member (in the tenant's namespace there).
        remote = (
            kind_clusters[member]
            .batch.list_job_for_all_namespaces(
                label_selector=f"{JOB_NAMESPACE_LABEL}={kind_namespace}"
            )
            .items
        )
        assert len(remote) == 1, [j.metadata.name for j in remote]
        assert remote[0].metadata.labels[JOB_NAME_LABEL] == name
        assert remote[0].status.succeeded == 1
    tenant.assert_ledger_balanced()
