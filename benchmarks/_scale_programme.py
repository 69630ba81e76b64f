"""``federation_scale.py --programme``: the same burst, paid by a voucher programme.

Instead of a voucher per tenant written by hand, one VoucherProgram selects the run's tenant
namespaces, which belong to ``companies`` companies (several namespaces each, so caps and credit
lines are shared across namespaces, the hottest counters in admission); the operator issues
every namespace its voucher, and each job's admission also checks and holds the programme's
pool, the company's cap and its credit line. The pool and caps afford every job, so the figures
compare with a plain run's: what the programme's counters cost admission.
"""

from __future__ import annotations

import math
import time
from decimal import Decimal
from typing import Any

from _common import log, wait_until
from _scale_submit import create

from suanli.api.meta import API_VERSION
from suanli.devenv import install
from suanli.members.kubeapi import describe_error, request_json
from suanli.vouchers.programs import voucher_name

SELECTOR_LABEL = "suanli.io/bench-run"
SHARE_PERCENT = 30


def name(run: str) -> str:
    return f"bench-{run}"


def issued_voucher(run: str) -> str:
    """The voucher the programme issues in every tenant namespace: what jobs name."""
    return voucher_name(name(run))


def programme(run: str, jobs: int, max_runtime_hours: int, companies: int) -> dict[str, Any]:
    # Every job's worst case (1 GPU x maxRuntime x the dearest H100 price), twice over.
    worst = Decimal(install.DEFAULT_PRICES["H100"]) * max_runtime_hours
    pool = worst * max(jobs, 1) * 2 + 100
    cap = worst * math.ceil(max(jobs, 1) / companies) * 2 + 100
    return {
        "apiVersion": API_VERSION,
        "kind": "VoucherProgram",
        "metadata": {"name": name(run)},
        "spec": {
            "period": {"start": "2020-01-01T00:00:00Z", "end": "2099-01-01T00:00:00Z"},
            "pool": f"{pool:.2f}",
            "creditLine": f"{cap:.2f}",
            "namespaceSelector": {"matchLabels": {SELECTOR_LABEL: run}},
            "rules": [{"name": "bench", "sharePercent": SHARE_PERCENT, "companyCap": f"{cap:.2f}"}],
        },
    }


def prepare(
    hub: Any, run: str, tenants: list[str], *, jobs: int, max_runtime_hours: int, companies: int
) -> None:
    """The programme, the tenant namespaces of ``companies`` companies, and a wait until the
    operator has issued every namespace its voucher."""
    create(
        hub,
        f"/apis/{API_VERSION}/voucherprograms",
        programme(run, jobs, max_runtime_hours, companies),
    )
    for index, namespace in enumerate(tenants):
        labels = {SELECTOR_LABEL: run, "suanli.io/company": f"bench-company-{index % companies}"}
        create(hub, "/api/v1/namespaces", {"metadata": {"name": namespace, "labels": labels}})
    voucher = issued_voucher(run)

    def issued() -> bool:
        for namespace in tenants:
            try:
                request_json(
                    hub,
                    "GET",
                    f"/apis/{API_VERSION}/namespaces/{namespace}/voucherquotas/{voucher}",
                )
            except Exception as error:
                if "404" in describe_error(error):
                    return False
                raise
        return True

    started = time.monotonic()
    wait_until(issued, 120, "the programme's vouchers to be issued")
    log(
        f"programme {name(run)}: {len(tenants)} vouchers issued to {companies} companies in "
        f"{time.monotonic() - started:.1f}s"
    )


def delete(hub: Any, run: str) -> None:
    """Remove the programme (best effort; its vouchers go with their namespaces)."""
    try:
        request_json(hub, "DELETE", f"/apis/{API_VERSION}/voucherprograms/{name(run)}")
    except Exception as error:
        if "404" not in describe_error(error):
            log(f"could not delete the programme: {describe_error(error)}")
