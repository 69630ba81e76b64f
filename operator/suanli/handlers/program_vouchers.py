"""Vouchers issued without an application: every company namespace a programme selects holds
its VoucherQuota, and only while it should.

Every namespace labelled ``suanli.io/company`` that a VoucherProgram's namespace selector
matches gets the programme's VoucherQuota (:func:`~suanli.vouchers.programs.issued_voucher`,
owned by the programme). Where several programmes match, the one with the highest
``spec.priority`` (then name) issues: at most one programme subsidises a charge.

What a namespace should hold changes on two kinds of cause:

- **Events**: a namespace's labels or a programme's spec change; the watch handlers here and in
  :mod:`suanli.handlers.programs` reconcile at once (seconds).
- **The clock**: a programme's period opens or ends, and a time-limited rule's months pass (a
  start-up's first year). :func:`issue_forever` sleeps until the next such moment
  (:func:`~suanli.vouchers.programs.next_change`), at most :data:`RECHECK_SECONDS`, and
  reconciles every namespace then.

A voucher is never withdrawn while jobs hold on it: the withdrawal waits until they are
charged and closed (the loop looks again within :data:`RECHECK_SECONDS`), so no running job
loses the voucher it will be charged to. A programme whose period is over keeps its vouchers
(they admit nothing after ``validUntil``) as the tenants' record of it, until the namespace
stops matching or the programme is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, cast

import kopf

from suanli.api.common import parse_timestamp
from suanli.api.kinds import VOUCHERQUOTAS
from suanli.api.voucherprogram import (
    COMPANY_LABEL,
    ENROLLED_ANNOTATION,
    PROGRAM_LABEL,
    VoucherProgram,
)
from suanli.handlers.runtime import Runtime
from suanli.kits.loops import run_forever
from suanli.kube import NotFoundError
from suanli.vouchers.programs import choose_rule, issued_voucher, next_change, voucher_name

logger = logging.getLogger(__name__)

RECHECK_SECONDS: Final = 30.0
"""The longest the issuer sleeps: deferred withdrawals and failed writes are retried then."""
SOONEST_SECONDS: Final = 0.5
"""The shortest it sleeps, so a moment just passed is not re-run in a tight loop."""


# --- what a namespace should hold ----------------------------------------------------------------


def _company(namespace: Mapping[str, Any]) -> str | None:
    return (namespace["metadata"].get("labels") or {}).get(COMPANY_LABEL)


def _namespace_enrolled(namespace: Mapping[str, Any]) -> datetime | None:
    metadata = namespace["metadata"]
    annotated = (metadata.get("annotations") or {}).get(ENROLLED_ANNOTATION)
    if annotated:
        try:
            return parse_timestamp(annotated)
        except ValueError:
            logger.warning(
                "namespace %s: %s=%r is not an RFC 3339 time; counting from its creation",
                metadata.get("name"),
                ENROLLED_ANNOTATION,
                annotated,
            )
    created = metadata.get("creationTimestamp")
    return parse_timestamp(created) if created else None


def enrolments(namespaces: Iterable[Mapping[str, Any]]) -> dict[str, datetime]:
    """When each company enrolled: the earliest of its namespaces' enrolments."""
    enrolled: dict[str, datetime] = {}
    for namespace in namespaces:
        company, moment = _company(namespace), _namespace_enrolled(namespace)
        if company and moment is not None:
            enrolled[company] = min(moment, enrolled.get(company, moment))
    return enrolled


def _matching(
    programs: Iterable[VoucherProgram], labels: Mapping[str, str]
) -> list[VoucherProgram]:
    """The programmes that select ``labels``, highest priority first (then by name)."""
    return sorted(
        (
            program
            for program in programs
            if program.spec.namespace_selector.matches(dict(labels))
            and not program.metadata.deletion_timestamp
        ),
        key=lambda p: (-p.spec.priority, p.metadata.name or ""),
    )


def desired_voucher(
    programs: Iterable[VoucherProgram],
    namespace: Mapping[str, Any],
    enrolled: Mapping[str, datetime],
    now: datetime,
) -> dict[str, Any] | None:
    """The programme voucher ``namespace`` should hold at ``now``, or None."""
    labels = namespace["metadata"].get("labels") or {}
    company = labels.get(COMPANY_LABEL)
    if not company or namespace["metadata"].get("deletionTimestamp"):
        return None
    since = enrolled.get(company, now)
    for program in _matching(programs, labels):
        if program.spec.period.end <= now:
            continue
        rule = choose_rule(program, labels, since, now)
        if rule is not None:
            return issued_voucher(program, namespace["metadata"]["name"], company, rule)
    return None


def _kept_after_period(
    programs: Iterable[VoucherProgram], namespace: Mapping[str, Any], now: datetime
) -> set[str]:
    """The vouchers of programmes whose period is over that still select ``namespace``: kept
    as the tenants' record of them."""
    labels = namespace["metadata"].get("labels") or {}
    if not labels.get(COMPANY_LABEL):
        return set()
    return {
        voucher_name(program.metadata.name or "")
        for program in _matching(programs, labels)
        if program.spec.period.end <= now
    }


# --- reconciling ---------------------------------------------------------------------------------


def _holds_jobs(runtime: Runtime, namespace: str, voucher: str) -> bool:
    key = (namespace, voucher)
    ledger = runtime.book.ledger(key)
    return bool(runtime.book.pending_uids(key)) or (ledger is not None and ledger.active_jobs > 0)


async def reconcile_namespace(
    runtime: Runtime, name: str, enrolled: Mapping[str, datetime] | None = None
) -> bool:
    """Issue, update or withdraw the namespace's programme voucher. Returns False when a
    withdrawal waits for jobs that still hold on the voucher."""
    now = datetime.now(UTC)
    if enrolled is None:
        enrolled = enrolments(runtime.namespaces.values())
    programs = list(runtime.program_specs.values())
    namespace = runtime.namespaces.get(name)
    desired = desired_voucher(programs, namespace, enrolled, now) if namespace else None
    kept = _kept_after_period(programs, namespace, now) if namespace else set()
    issued = [
        parsed
        for parsed in runtime.vouchers.in_namespace(name)
        if (parsed.voucher.metadata.labels or {}).get(PROGRAM_LABEL)
    ]
    settled = True
    for parsed in issued:
        voucher = parsed.voucher.metadata.name or ""
        if (desired is not None and voucher == desired["metadata"]["name"]) or voucher in kept:
            continue
        if _holds_jobs(runtime, name, voucher):
            settled = False  # withdrawn once its jobs are charged and closed
            continue
        logger.info("withdrawing voucher %s/%s", name, voucher)
        with contextlib.suppress(NotFoundError):  # gone already
            await runtime.hub.delete(VOUCHERQUOTAS, name, voucher)
    if desired is None:
        return settled
    current = next(
        (p for p in issued if p.voucher.metadata.name == desired["metadata"]["name"]), None
    )
    if current is None:
        stored = await runtime.hub.create(VOUCHERQUOTAS, desired)
        runtime.vouchers.put(stored)
        parsed_stored = runtime.vouchers.get(name, desired["metadata"]["name"])
        if parsed_stored is not None:  # what a read would give: admission need not read it
            runtime.book.load((name, desired["metadata"]["name"]), parsed_stored.ledger)
        logger.info("issued voucher %s/%s", name, desired["metadata"]["name"])
    elif current.body.get("spec") != desired["spec"]:
        stored = await runtime.hub.merge_patch(
            VOUCHERQUOTAS, name, desired["metadata"]["name"], {"spec": desired["spec"]}
        )
        runtime.vouchers.put(stored)
        logger.info(
            "voucher %s/%s now follows rule %s",
            name,
            desired["metadata"]["name"],
            desired["spec"]["program"]["rule"],
        )
    return settled


async def reconcile_all(runtime: Runtime) -> bool:
    """:func:`reconcile_namespace` for every namespace; False when any withdrawal waits."""
    enrolled = enrolments(runtime.namespaces.values())
    settled = True
    for name in list(runtime.namespaces):
        settled = await reconcile_namespace(runtime, name, enrolled) and settled
    return settled


def seconds_to_next_change(runtime: Runtime, now: datetime) -> float:
    """How long the issuer may sleep: until the clock next changes some namespace's voucher,
    between :data:`SOONEST_SECONDS` and :data:`RECHECK_SECONDS`."""
    enrolled = enrolments(runtime.namespaces.values())
    moments = [
        moment
        for program in runtime.program_specs.values()
        for since in list(enrolled.values()) or [now]
        if (moment := next_change(program, since, now)) is not None
    ]
    if not moments:
        return RECHECK_SECONDS
    wait = (min(moments) - now).total_seconds()
    return min(RECHECK_SECONDS, max(SOONEST_SECONDS, wait))


async def issue_forever(runtime: Runtime) -> None:
    """Reconcile every namespace's voucher whenever the clock changes what it should be, and
    at least every :data:`RECHECK_SECONDS` (deferred withdrawals, failed writes)."""
    await run_forever(
        "program-vouchers",
        lambda: asyncio.sleep(seconds_to_next_change(runtime, datetime.now(UTC))),
        lambda: reconcile_all(runtime),
    )


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
    known = runtime.namespaces.get(name)
    runtime.namespaces[name] = body
    if _company(body) is None and (known is None or _company(known) is None):
        return  # not a company's, and never was
    await reconcile_namespace(runtime, name)
