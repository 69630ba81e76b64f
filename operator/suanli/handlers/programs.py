"""Voucher programmes: the programme's counters, from admission to status.

- **Issue.** A programme created or edited re-issues every namespace's voucher
  (:mod:`suanli.handlers.program_vouchers`).
- **Admit.** :mod:`suanli.admission.programme` splits a job's hold between programme and
  company and checks it against the pool, the company's cap and its credit line, inside the
  admission decision's synchronous block (:mod:`suanli.admission.decide`), which then holds
  the split in the :class:`~suanli.vouchers.programs.ProgramBook`.
- **Charge.** :class:`ProgramCharges` splits each attempt's charge into the usage record and
  books the record on the programme's counters (called by
  :class:`~suanli.controller.charging.RecordBilling`).
- **Rebuild and status.** A new leader rebuilds every programme from its jobs' holds and usage
  records (:func:`rebuild_all`); :func:`write_status_forever` copies the counters into each
  programme's status, behind.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, cast

import kopf

from suanli import metrics
from suanli.admission.programme import hold_split
from suanli.api.common import (
    ConditionStatus,
    format_money,
    set_condition,
)
from suanli.api.computejob import ComputeJob
from suanli.api.kinds import COMPUTEJOBS, USAGERECORDS, VOUCHERPROGRAMS
from suanli.api.meta import GROUP, VERSION
from suanli.api.voucherprogram import VoucherProgram
from suanli.handlers import program_vouchers
from suanli.handlers.program_charges import program_of, restored_charge
from suanli.handlers.runtime import Runtime
from suanli.kits.loops import run_forever
from suanli.kube import NotFoundError
from suanli.vouchers.holds import read_hold
from suanli.vouchers.programs import (
    ProgramLedger,
    ProgramTerms,
    RestoredCharge,
    RestoredHold,
    restore,
)

logger = logging.getLogger(__name__)

STATUS_INTERVAL: Final = 1.0
"""Seconds between programme status writes (coalesced: one write per changed programme)."""


# --- rebuild ------------------------------------------------------------------------------------


async def rebuild_all(runtime: Runtime) -> None:
    """Rebuild every programme's counters from the jobs that hold and the records that charged
    (after the vouchers' recount, which says which holds are still active)."""
    programs = [
        VoucherProgram.model_validate(body) for body in await runtime.hub.list(VOUCHERPROGRAMS)
    ]
    jobs = [ComputeJob.model_validate(body) for body in await runtime.hub.list(COMPUTEJOBS)]
    records = await runtime.hub.list(USAGERECORDS)
    holds: dict[str, list[RestoredHold]] = {}
    for job in jobs:
        hold = read_hold(job.metadata.annotations)
        if hold is None or hold.program is None or not job.metadata.uid:
            continue
        ledger = runtime.book.ledger((job.metadata.namespace or "", hold.voucher))
        entry = ledger.entries.get(job.metadata.uid) if ledger is not None else None
        if entry is None or not entry.is_active:
            continue
        quote = hold.program
        holds.setdefault(quote.name, []).append(
            RestoredHold(job.metadata.uid, quote.company, quote.rule, hold_split(quote))
        )
    charges: dict[str, list[RestoredCharge]] = {}
    for record in records:
        charge = restored_charge(record)
        if charge is not None:
            charges.setdefault(program_of(record), []).append(charge)
    for program in programs:
        name = program.metadata.name or ""
        runtime.program_specs[name] = program
        rebuilt = restore(
            ProgramTerms.from_program(program), holds.get(name, []), charges.get(name, [])
        )
        rebuilt.version = 1  # write the status once after a takeover
        runtime.programs.install(rebuilt)
    logger.info("rebuilt %d voucher programmes", len(programs))


# --- programmes ---------------------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, VOUCHERPROGRAMS, id="voucherprogram-events")
async def voucherprogram_event(
    type: str | None, event: kopf.RawEvent, memo: kopf.Memo, **_: Any
) -> None:
    """A programme was created, edited or deleted: its counters' terms and every voucher."""
    runtime: Runtime = memo.runtime
    body = cast(dict[str, Any], event["object"])
    name = body["metadata"]["name"]
    if type == "DELETED":
        runtime.program_specs.pop(name, None)
        runtime.programs.forget(name)
    else:
        program = VoucherProgram.model_validate(body)
        known = runtime.program_specs.get(name)
        runtime.program_specs[name] = program
        if known is not None and _same_terms(known, program):
            return  # its status was written (by us): no voucher changes
        terms = ProgramTerms.from_program(program)
        if runtime.programs.ledger(name) is None:
            runtime.programs.install(ProgramLedger(terms, version=1))
        runtime.programs.set_terms(terms)
    await program_vouchers.reconcile_all(runtime)


def _same_terms(known: VoucherProgram, program: VoucherProgram) -> bool:
    """Whether nothing the vouchers depend on changed: the spec (its generation) and whether
    the programme is being deleted."""
    return (
        known.metadata.generation == program.metadata.generation
        and known.metadata.uid == program.metadata.uid
        and known.metadata.deletion_timestamp == program.metadata.deletion_timestamp
    )


# --- status ---------------------------------------------------------------------------------


def status_of(program: VoucherProgram, ledger: ProgramLedger, now: datetime) -> dict[str, Any]:
    """The programme's status fields, from its counters."""
    spec = program.spec
    expired = now >= spec.period.end
    exhausted = ledger.left <= 0
    active = not expired and not exhausted and now >= spec.period.start
    conditions = list(program.status.conditions)
    generation = program.metadata.generation
    for type_, on, reason, message in (
        (
            "Active",
            active,
            "Active" if active else ("Expired" if expired else "Inactive"),
            "subsidises new jobs" if active else "subsidises no new job",
        ),
        (
            "Exhausted",
            exhausted,
            "PoolCommitted" if exhausted else "PoolLeft",
            f"{format_money(max(ledger.left, Decimal(0)))} {spec.currency} of the pool is left",
        ),
        (
            "Expired",
            expired,
            "PeriodOver" if expired else "InPeriod",
            f"the period ends {spec.period.end.isoformat()}",
        ),
    ):
        status = ConditionStatus.TRUE if on else ConditionStatus.FALSE
        set_condition(
            conditions, type_, status, reason, message, now=now, observed_generation=generation
        )
    return {
        "observedGeneration": generation,
        "committed": format_money(ledger.committed),
        "spent": format_money(ledger.spent),
        "left": format_money(max(ledger.left, Decimal(0))),
        "owed": format_money(ledger.owed),
        "companies": len(ledger.companies()),  # those that hold or spent
        "rules": [
            {
                "name": rule,
                "companies": count,
                "committed": format_money(committed),
                "spent": format_money(spent),
            }
            for rule, (count, committed, spent) in sorted(ledger.rule_totals().items())
        ],
        "conditions": [c.model_dump(mode="json", by_alias=True) for c in conditions],
    }


def standing(program: VoucherProgram, now: datetime) -> tuple[bool, bool]:
    """Whether the programme's period has opened, and whether it is over: what the clock alone
    changes in its conditions."""
    period = program.spec.period
    return now >= period.start, now >= period.end


async def write_status_forever(runtime: Runtime) -> None:
    """Copy each programme's counters into its status when they or its standing in its period
    changed (written behind admission; Expired turns on within a second of the period's end)."""
    written: dict[str, tuple[int, tuple[bool, bool]]] = {}

    async def write_changed() -> None:
        now = datetime.now(UTC)
        for name in runtime.programs.names():
            ledger = runtime.programs.ledger(name)
            program = runtime.program_specs.get(name)
            if ledger is None or program is None:
                continue
            version = (ledger.version, standing(program, now))
            if written.get(name) == version:
                continue
            currency = ledger.terms.currency
            metrics.PROGRAM_COMMITTED.labels(name, currency).set(float(ledger.committed))
            metrics.PROGRAM_LEFT.labels(name, currency).set(float(ledger.left))
            try:
                await runtime.hub.patch_status(
                    VOUCHERPROGRAMS, None, name, {"status": status_of(program, ledger, now)}
                )
                written[name] = version
            except NotFoundError:
                written[name] = version
            except Exception as error:  # written next time
                metrics.BACKGROUND_TASK_ERRORS.labels("program-status").inc()
                logger.warning("programme %s: status not written: %s", name, error)

    await run_forever("program-status", lambda: asyncio.sleep(STATUS_INTERVAL), write_changed)
