"""Voucher programmes: vouchers issued without an application, and the programme's counters.

- **Issue.** Every namespace labelled ``suanli.io/company`` that a VoucherProgram's namespace
  selector matches gets the programme's VoucherQuota
  (:func:`~suanli.vouchers.programs.issued_voucher`, owned by the programme), within a watch
  event of the label or the programme changing; a namespace that stops matching loses it.
  Where several programmes match, the one with the highest ``spec.priority`` (then name)
  issues: at most one programme subsidises a charge.
- **Admit.** :func:`program_quote` splits a job's hold between programme and company and
  :func:`program_refusals` checks it against the pool, the company's cap and its credit line;
  the validating webhook calls both in its synchronous block (see
  :mod:`suanli.handlers.admission`), then holds the split in the
  :class:`~suanli.vouchers.programs.ProgramBook`.
- **Charge.** :class:`ProgramCharges` splits each attempt's charge into the usage record and
  books the record on the programme's counters (called by
  :class:`~suanli.controller.charging.RecordBilling`).
- **Rebuild and status.** A new leader rebuilds every programme from its jobs' holds and usage
  records (:func:`rebuild_all`); :func:`write_status_forever` copies the counters into each
  programme's status, behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, cast

import kopf

from suanli import metrics
from suanli.api.common import (
    ConditionStatus,
    format_money,
    parse_timestamp,
    set_condition,
)
from suanli.api.computejob import ComputeJob
from suanli.api.membercluster import MemberCluster
from suanli.api.meta import GROUP, VERSION
from suanli.api.voucherprogram import COMPANY_LABEL, PROGRAM_LABEL, VoucherProgram
from suanli.api.voucherquota import VoucherQuota
from suanli.handlers.program_charges import no_subsidy_reason, program_of, restored_charge
from suanli.handlers.runtime import Runtime
from suanli.kube import NotFoundError
from suanli.vouchers.holds import ProgramQuote, read_hold
from suanli.vouchers.limits import Allowed, Refused, quote
from suanli.vouchers.pricing import WorstCase
from suanli.vouchers.programs import (
    HoldSplit,
    ProgramLedger,
    ProgramTerms,
    RestoredCharge,
    RestoredHold,
    choose_rule,
    issued_voucher,
    restore,
    split_hold,
)
from suanli.vouchers.refusals import Refusal, RefusalReason

logger = logging.getLogger(__name__)

PLURAL: Final = "voucherprograms"
STATUS_INTERVAL: Final = 1.0
"""Seconds between programme status writes (coalesced: one write per changed programme)."""


# --- admission --------------------------------------------------------------------------------


def program_quote(
    runtime: Runtime, voucher: VoucherQuota, worst_case: WorstCase, members: list[MemberCluster]
) -> ProgramQuote | None:
    """The programme's part of a job's hold on ``voucher``; None for a voucher no programme
    issued, or whose programme is gone (the voucher goes with it)."""
    share = voucher.spec.program
    program = runtime.program_specs.get(share.name) if share is not None else None
    if share is None or program is None:
        return None
    by_name = {member.metadata.name: member for member in members}
    subsidised = [
        no_subsidy_reason(program, by_name.get(offer.cluster), share.company) is None
        for offer in worst_case.eligible
    ]
    split = split_hold(worst_case.amount, share.share_percent, subsidised)
    return ProgramQuote(share.name, share.company, share.rule, split.program, split.company)


def judge(
    runtime: Runtime,
    job: ComputeJob,
    voucher: VoucherQuota,
    members: list[MemberCluster],
    now: datetime,
) -> ProgramQuote | Refused | None:
    """The programme's part of the job's hold, or why the programme cannot take it; None for
    a voucher no programme issued, or a job its voucher refuses anyway (:func:`evaluate` then
    says why). Synchronous: the caller holds the result before any await."""
    if voucher.spec.program is None:
        return None
    priced = quote(job, voucher, runtime.price_offers(), now)
    if not isinstance(priced, Allowed):
        return None
    part = program_quote(runtime, voucher, priced.worst_case, members)
    if part is None:
        return None
    refusals = program_refusals(runtime, part)
    return Refused(tuple(refusals)) if refusals else part


def program_refusals(runtime: Runtime, quote: ProgramQuote) -> list[Refusal]:
    """Why the programme cannot hold ``quote`` now (pool, company cap, credit line)."""
    ledger = runtime.programs.ledger(quote.name)
    if ledger is None:
        return [
            Refusal(
                RefusalReason.PROGRAM_POOL_EXHAUSTED,
                "spec.program",
                f"programme {quote.name} is not loaded yet; submit again in a few seconds",
            )
        ]
    return ledger.check(quote.company, quote.rule, _hold_split(quote))


def hold_program(runtime: Runtime, uid: str, quote: ProgramQuote) -> None:
    """Take the job's programme hold (right after :func:`program_refusals`, no await between)."""
    runtime.programs.hold(quote.name, uid, quote.company, quote.rule, _hold_split(quote))


def _hold_split(quote: ProgramQuote) -> HoldSplit:
    return HoldSplit(quote.program, quote.company_share)


# --- rebuild ------------------------------------------------------------------------------------


async def rebuild_all(runtime: Runtime) -> None:
    """Rebuild every programme's counters from the jobs that hold and the records that charged
    (after the vouchers' recount, which says which holds are still active)."""
    programs = [VoucherProgram.model_validate(body) for body in await runtime.hub.list(PLURAL)]
    jobs = [ComputeJob.model_validate(body) for body in await runtime.hub.list("computejobs")]
    records = await runtime.hub.list("usagerecords")
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
            RestoredHold(job.metadata.uid, quote.company, quote.rule, _hold_split(quote))
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


# --- issuing vouchers ---------------------------------------------------------------------------


def _enrolled(runtime: Runtime, company: str) -> datetime:
    """When the company joined: its first namespace's creation."""
    times = [
        parse_timestamp(ns["metadata"]["creationTimestamp"])
        for ns in runtime.namespaces.values()
        if (ns["metadata"].get("labels") or {}).get(COMPANY_LABEL) == company
        and ns["metadata"].get("creationTimestamp")
    ]
    return min(times, default=datetime.now(UTC))


def desired_voucher(runtime: Runtime, namespace: dict[str, Any]) -> dict[str, Any] | None:
    """The programme voucher ``namespace`` should hold now, or None."""
    labels = namespace["metadata"].get("labels") or {}
    company = labels.get(COMPANY_LABEL)
    if not company or namespace["metadata"].get("deletionTimestamp"):
        return None
    now = datetime.now(UTC)
    candidates = sorted(
        (
            program
            for program in runtime.program_specs.values()
            if program.spec.namespace_selector.matches(labels)
            and program.spec.period.end > now
            and not program.metadata.deletion_timestamp
        ),
        key=lambda p: (-p.spec.priority, p.metadata.name or ""),
    )
    enrolled = _enrolled(runtime, company)
    for program in candidates:
        rule = choose_rule(program, labels, enrolled, now)
        if rule is not None:
            return issued_voucher(program, namespace["metadata"]["name"], company, rule)
    return None


async def reconcile_namespace(runtime: Runtime, name: str) -> None:
    """Issue, update or withdraw the namespace's programme voucher."""
    namespace = runtime.namespaces.get(name)
    desired = desired_voucher(runtime, namespace) if namespace is not None else None
    issued = [
        parsed
        for parsed in runtime.vouchers.in_namespace(name)
        if (parsed.voucher.metadata.labels or {}).get(PROGRAM_LABEL)
    ]
    for parsed in issued:
        if desired is None or parsed.voucher.metadata.name != desired["metadata"]["name"]:
            logger.info("withdrawing voucher %s/%s", name, parsed.voucher.metadata.name)
            with contextlib.suppress(NotFoundError):  # gone already
                await runtime.hub.delete("voucherquotas", name, parsed.voucher.metadata.name or "")
    if desired is None:
        return
    current = next(
        (p for p in issued if p.voucher.metadata.name == desired["metadata"]["name"]), None
    )
    if current is None:
        stored = await runtime.hub.create("voucherquotas", desired)
        runtime.vouchers.put(stored)
        logger.info("issued voucher %s/%s", name, desired["metadata"]["name"])
    elif current.body.get("spec") != desired["spec"]:
        stored = await runtime.hub.merge_patch(
            "voucherquotas", name, desired["metadata"]["name"], {"spec": desired["spec"]}
        )
        runtime.vouchers.put(stored)


async def _reconcile_all(runtime: Runtime) -> None:
    for name in list(runtime.namespaces):
        await reconcile_namespace(runtime, name)


@kopf.on.event("", "v1", "namespaces", id="namespace-vouchers")
async def namespace_event(
    type: str | None, event: kopf.RawEvent, memo: kopf.Memo, **_: Any
) -> None:
    """A namespace appeared, changed its labels or went: its programme voucher follows."""
    runtime: Runtime = memo.runtime
    body = cast(dict[str, Any], event["object"])
    name = body["metadata"]["name"]
    if type == "DELETED":
        runtime.namespaces.pop(name, None)
        return
    labels = body["metadata"].get("labels") or {}
    known = runtime.namespaces.get(name)
    runtime.namespaces[name] = body
    if COMPANY_LABEL not in labels and (known is None or _company(known) is None):
        return  # not a company's, and never was
    await reconcile_namespace(runtime, name)


def _company(namespace: dict[str, Any]) -> str | None:
    return (namespace["metadata"].get("labels") or {}).get(COMPANY_LABEL)


@kopf.on.event(GROUP, VERSION, PLURAL, id="voucherprogram-events")
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
        runtime.program_specs[name] = program
        terms = ProgramTerms.from_program(program)
        if runtime.programs.ledger(name) is None:
            runtime.programs.install(ProgramLedger(terms, version=1))
        runtime.programs.set_terms(terms)
    await _reconcile_all(runtime)


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


async def write_status_forever(runtime: Runtime) -> None:
    """Copy each changed programme's counters into its status (written behind admission)."""
    written: dict[str, int] = {}
    while True:
        await asyncio.sleep(STATUS_INTERVAL)
        for name in runtime.programs.names():
            ledger = runtime.programs.ledger(name)
            program = runtime.program_specs.get(name)
            if ledger is None or program is None or written.get(name) == ledger.version:
                continue
            version = ledger.version
            currency = ledger.terms.currency
            metrics.PROGRAM_COMMITTED.labels(name, currency).set(float(ledger.committed))
            metrics.PROGRAM_LEFT.labels(name, currency).set(float(ledger.left))
            try:
                await runtime.hub.patch_status(
                    PLURAL, None, name, {"status": status_of(program, ledger, datetime.now(UTC))}
                )
                written[name] = version
            except NotFoundError:
                written[name] = version
            except Exception as error:  # written next time
                metrics.BACKGROUND_TASK_ERRORS.labels("program-status").inc()
                logger.warning("programme %s: status not written: %s", name, error)
