"""VoucherQuota handlers: keep balances and conditions current, and recount the ledger.

The recount is the ledger's self-healing (as the ResourceQuota controller recomputes usage):
when this replica takes the lead and then every ``--recount-interval`` seconds, each voucher's
ledger is checked against the ComputeJobs that exist; holds whose job never got stored are
released after a grace period, and proven charges or releases missing from the ledger are
applied. It runs as one background task for all vouchers rather than a Kopf timer per
voucher, so its cost does not grow with a task per object.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kopf

from suanli.api.computejob import ComputeJob
from suanli.api.kinds import COMPUTEJOBS, USAGERECORDS, VOUCHERQUOTAS
from suanli.api.meta import GROUP, VERSION
from suanli.handlers.runtime import Runtime
from suanli.kits.loops import run_forever
from suanli.vouchers.ledger import Ledger
from suanli.vouchers.recount import recorded_charge, recount

logger = logging.getLogger(__name__)


@kopf.on.resume(GROUP, VERSION, VOUCHERQUOTAS, id="voucherquota-status")
@kopf.on.create(GROUP, VERSION, VOUCHERQUOTAS, id="voucherquota-status")
@kopf.on.update(GROUP, VERSION, VOUCHERQUOTAS, id="voucherquota-status", field="spec")
async def voucherquota_status(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Write balances and conditions (a new voucher, a changed spec, an operator restart)."""
    runtime: Runtime = memo.runtime
    await runtime.ledger_writer(namespace or "", name).refresh()


@kopf.on.event(GROUP, VERSION, VOUCHERQUOTAS)
async def voucherquota_event(
    type: str | None, event: kopf.RawEvent, memo: kopf.Memo, **_: Any
) -> None:
    """Keep the voucher cache current (admission reads vouchers from it)."""
    runtime: Runtime = memo.runtime
    body = cast(dict[str, Any], event["object"])
    if type == "DELETED":
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        runtime.vouchers.forget(namespace, name)
        runtime.book.forget((namespace, name))
    else:
        runtime.vouchers.put(body)


async def recount_voucher(runtime: Runtime, namespace: str, name: str) -> list[str]:
    """Reconcile one voucher's ledger with the jobs of its namespace; the keys it fixed."""
    jobs = [
        ComputeJob.model_validate(body) for body in await runtime.hub.list(COMPUTEJOBS, namespace)
    ]
    # Every record of the namespace: a voucher's are told apart by their spec, exactly, not by
    # a label (a label value holds only 63 characters).
    records = [
        charge
        for body in await runtime.hub.list(USAGERECORDS, namespace)
        if (charge := recorded_charge(body)) is not None
    ]
    grace = timedelta(seconds=runtime.options.hold_grace_seconds)
    fixed: list[str] = []

    def reconcile(ledger: Ledger) -> Ledger:
        in_flight = runtime.book.pending_uids((namespace, name))
        result = recount(
            ledger, jobs, records, now=datetime.now(UTC), grace=grace, in_flight=in_flight
        )
        fixed[:] = [*result.released, *result.charged, *result.restored, *result.rekeyed]
        return result.ledger

    # Through the writer, so the recount never races an admission on the same voucher; the
    # write also refreshes conditions such as Expired as time passes.
    await runtime.ledger_writer(namespace, name).change(reconcile)
    if fixed:
        logger.info("recount of voucher %s/%s fixed %s", namespace, name, ", ".join(fixed))
    return fixed


async def recount_all(runtime: Runtime) -> None:
    """Recount every voucher; the list also refreshes the voucher cache."""
    for voucher in await runtime.hub.list(VOUCHERQUOTAS):
        runtime.vouchers.put(voucher)
        metadata = voucher["metadata"]
        try:
            await recount_voucher(runtime, metadata["namespace"], metadata["name"])
        except Exception:  # one broken voucher must not stop the others' recount
            logger.exception(
                "recount of voucher %s/%s failed", metadata["namespace"], metadata["name"]
            )


async def recount_forever(runtime: Runtime) -> None:
    """Every ``--recount-interval`` seconds, recount every voucher (started by the takeover,
    after its own first recount)."""
    await run_forever(
        "recount",
        lambda: asyncio.sleep(runtime.options.recount_interval),
        lambda: recount_all(runtime),
    )
