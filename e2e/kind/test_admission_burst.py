"""Exact-K admission on kind: a burst of concurrent creates reaches the operator's pod through
the webhook Service, and exactly the jobs the voucher affords are admitted."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.kind.conftest import GROUP, VERSION
from e2e.kube import Cluster
from e2e.tenant import compute_job, voucher
from suanli.devenv import kind_install
from suanli.kits.waiting import TIMEOUTS, wait_for

# One job: 1 GPU for 1h at the dearest local price (H100, 28.00 CNY).
ESTIMATE = Decimal("28.00")


def test_a_burst_admits_exactly_what_the_voucher_affords(
    kind_clusters: dict[str, Cluster],
    suanli_installed: kind_install.Images,
    kind_namespace: str,
) -> None:
    custom = client.CustomObjectsApi(kind_clusters["hub"].api)
    affordable, submissions = 12, 40
    amount = ESTIMATE * affordable + ESTIMATE / 2
    custom.create_namespaced_custom_object(
        GROUP, VERSION, kind_namespace, "voucherquotas", voucher("burst", f"{amount:.2f}")
    )

    def submit(index: int) -> str | None:
        # Runs (on kwok) past the end of the test, so its hold stays held.
        body = compute_job(f"job-{index:03d}", voucher_name="burst", run_for="1h")
        try:
            custom.create_namespaced_custom_object(
                GROUP, VERSION, kind_namespace, "computejobs", body
            )
        except ApiException as error:
            return str(error.body)
        return None

    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(submit, range(submissions)))
    refused = [message for message in outcomes if message is not None]
    assert submissions - len(refused) == affordable, refused[:3]
    for message in refused:
        assert "burst" in message and "short by 14.00 CNY" in message, message

    def recorded() -> dict[str, str] | None:
        found = custom.get_namespaced_custom_object(
            GROUP, VERSION, kind_namespace, "voucherquotas", "burst"
        )
        status = found.get("status") or {}
        reserved = Decimal(status.get("reserved", "-1"))
        return status if reserved == ESTIMATE * affordable else None

    status = wait_for(recorded, timeout=TIMEOUTS.job_complete, what="the holds to be recorded")
    assert status["activeJobs"] == affordable
    stored = custom.list_namespaced_custom_object(GROUP, VERSION, kind_namespace, "computejobs")
    assert len(stored["items"]) == affordable
