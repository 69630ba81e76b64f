"""The leader keeps each voucher programme's monthly VoucherStatements current.

Which months to regenerate: every usage record with a programme split that this leader books
marks its (programme, month) on :attr:`Runtime.statements
<suanli.handlers.runtime.Runtime.statements>` (one set insert on the charge path, no I/O).
A new leader marks this month and the last for every programme once, for the records its
predecessor booked after its last pass. Listing every programme record each interval would
find the same, but costs a month's records per programme per interval even when nothing was
charged; marking costs nothing while the platform is idle.

Every ``--statement-interval`` seconds, each marked month is regenerated from its records,
listed by label (``suanli.io/program`` and ``suanli.io/month``), with the pure code of
:mod:`suanli.vouchers.statement_objects`; a statement is written only when its figures or its
status changed. Open months are visited again when they close, to mark them Closed. A failed
month is logged, counted in ``suanli_background_task_errors_total{task="statements"}`` and
marked again for the next pass.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Final

from suanli import metrics
from suanli.api.kinds import USAGERECORDS, VOUCHERSTATEMENTS
from suanli.handlers.runtime import Runtime
from suanli.kits.loops import run_forever
from suanli.kube import Hub
from suanli.vouchers.statement_objects import (
    closes_at,
    month_selector,
    next_status,
    same_spec,
    statement_objects,
)
from suanli.vouchers.statements import statements
from suanli.vouchers.usage import month_of

logger = logging.getLogger(__name__)

TASK: Final = "statements"


def recent_months(now: datetime) -> tuple[str, str]:
    """This month and the last, ``YYYY-MM`` (UTC)."""
    first = now.astimezone(UTC).replace(day=1)
    return month_of(first), month_of(first - timedelta(days=1))


async def regenerate(hub: Hub, program: str, month: str, now: datetime) -> int:
    """Bring the statements of ``program``'s ``month`` in line with its records; how many
    writes it took (none when they were current)."""
    selector = month_selector(program, month)
    records = await hub.list(USAGERECORDS, label_selector=selector)
    stored = {
        body["metadata"]["name"]: body
        for body in await hub.list(VOUCHERSTATEMENTS, label_selector=selector)
    }
    writes = 0
    for body in statement_objects(statements(records, program, month)):
        name, spec = body["metadata"]["name"], body["spec"]
        current = stored.get(name)
        if current is None:
            # Finds the stored one if an earlier create landed and its answer was lost.
            current = await hub.create(VOUCHERSTATEMENTS, body)
            writes += 1
        # No status yet: created just now (or its first status write failed): revision 1.
        status = next_status(current if current.get("status") else None, spec, now)
        if not same_spec(current.get("spec"), spec):
            patch = {"metadata": {"labels": body["metadata"]["labels"]}, "spec": spec}
            await hub.merge_patch(VOUCHERSTATEMENTS, None, name, patch)
            writes += 1
        if status != current.get("status"):
            await hub.patch_status(VOUCHERSTATEMENTS, None, name, {"status": status})
            writes += 1
    return writes


async def regenerate_marked(
    runtime: Runtime, closing: dict[tuple[str, str], datetime], now: datetime
) -> None:
    """One pass: regenerate the marked months and the Open ones that closed since; a month
    that fails is counted, logged and marked again. ``closing`` holds the months written while
    Open and when they close."""
    due = {pair for pair, moment in closing.items() if moment <= now}
    for program, month in sorted(runtime.statements.take() | due):
        try:
            writes = await regenerate(runtime.hub, program, month, now)
        except Exception as error:  # the month is tried again next time
            metrics.BACKGROUND_TASK_ERRORS.labels(TASK).inc()
            logger.warning("statements of %s %s not regenerated: %s", program, month, error)
            runtime.statements.mark(program, month)
            continue
        if writes:
            logger.info("statements of %s %s: %d writes", program, month, writes)
        moment = closes_at(month)
        if moment > now:
            closing[program, month] = moment
        else:
            closing.pop((program, month), None)


async def regenerate_forever(runtime: Runtime) -> None:
    """Regenerate the marked months every ``--statement-interval`` (started by the takeover)."""
    for program in list(runtime.program_specs):
        for month in recent_months(datetime.now(UTC)):
            runtime.statements.mark(program, month)
    closing: dict[tuple[str, str], datetime] = {}
    await regenerate_marked(runtime, closing, datetime.now(UTC))
    await run_forever(
        TASK,
        lambda: asyncio.sleep(runtime.options.statement_interval),
        lambda: regenerate_marked(runtime, closing, datetime.now(UTC)),
    )
