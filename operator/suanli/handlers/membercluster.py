"""MemberCluster handlers on the hub: connect to each member and report what it has.

Admission prices jobs from the members' price lists, and the dispatcher places them on the
members' live capacity, so the operator holds every MemberCluster in memory (primed at
start-up, kept current by the watch) and keeps a MemberLink to each. A status loop writes each
member's conditions and GPU inventory every few seconds, only when something changed.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any, Final, cast

import kopf

from suanli import metrics
from suanli.api.catalogue import format_pflops, member_catalogue
from suanli.api.common import Condition, ConditionStatus, set_condition
from suanli.api.kinds import MEMBERCLUSTERS
from suanli.api.meta import GROUP, VERSION
from suanli.api.reasons import MemberConditionType, MemberReason
from suanli.dispatch.pflops import STATES, catalogue_fields, federation_summary, pflops_of
from suanli.handlers.runtime import Runtime
from suanli.kits.loops import run_forever
from suanli.members.workload import ModelPin

logger = logging.getLogger(__name__)

STATUS_INTERVAL: Final = 5.0


@kopf.on.startup()
async def membercluster_prime(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    runtime.dispatcher.start()
    try:
        members = await runtime.hub.list(MEMBERCLUSTERS)
    except Exception:  # the watch delivers them as well; start-up must not stall on it
        logger.exception("listing MemberClusters at start-up failed; the watch will add them")
        members = []
    for member in members:
        runtime.members[member["metadata"]["name"]] = member
        await runtime.dispatcher.member_upsert(member)

    async def write_statuses() -> None:
        for name in list(runtime.dispatcher.members):
            try:
                await write_member_status(runtime, name)
            except Exception as error:  # one member's failure must not stop the others' status
                metrics.BACKGROUND_TASK_ERRORS.labels("member-status").inc()
                logger.warning("status of member %s failed: %s", name, error)
        summary = federation_summary(runtime.members.values())
        for state in STATES:
            metrics.FEDERATION_PFLOPS.labels(state).set(float(getattr(summary, state)))

    runtime.spawn(
        run_forever("member-status", lambda: asyncio.sleep(STATUS_INTERVAL), write_statuses)
    )


@kopf.on.cleanup()
async def membercluster_disconnect(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    await runtime.dispatcher.stop()


@kopf.on.event(GROUP, VERSION, MEMBERCLUSTERS)
async def membercluster_event(
    type: str | None, event: kopf.RawEvent, name: str, memo: kopf.Memo, **_: Any
) -> None:
    runtime: Runtime = memo.runtime
    body = cast(dict[str, Any], event["object"])
    if type == "DELETED":
        runtime.members.pop(name, None)
        forget_member_metrics(name)
        await runtime.dispatcher.member_delete(name)
    else:
        runtime.members[name] = body
        await runtime.dispatcher.member_upsert(body)


@kopf.on.delete(GROUP, VERSION, MEMBERCLUSTERS, id="membercluster-removal")
async def membercluster_removal(name: str, memo: kopf.Memo, **_: Any) -> None:
    """Held by Kopf's finalizer until the member's jobs are charged and placed elsewhere and
    their copies removed; a failure is retried by Kopf, so deleting a member loses no money."""
    runtime: Runtime = memo.runtime
    await runtime.dispatcher.member_removed(name)


def forget_member_metrics(name: str) -> None:
    """Drop a departed member's series, so dashboards and alerts stop showing it."""
    for gauge in (
        metrics.MEMBER_CONDITION,
        metrics.MEMBER_TELEMETRY_AGE,
        metrics.MEMBER_FREE_GPUS,
        metrics.MEMBER_TOTAL_GPUS,
        metrics.MEMBER_PFLOPS,
    ):
        gauge.remove_by_labels({"member": name})


async def write_member_status(runtime: Runtime, name: str) -> None:
    dispatcher = runtime.dispatcher
    member = dispatcher.members.get(name)
    body = runtime.members.get(name)
    if member is None or body is None:
        return
    now = datetime.now(UTC)
    status = dict(body.get("status") or {})
    inventory = dispatcher.index.inventory(name)
    for view in inventory:
        metrics.MEMBER_FREE_GPUS.labels(name, view.model).set(view.free)
        metrics.MEMBER_TOTAL_GPUS.labels(name, view.model).set(view.total)
    catalogue = member_catalogue(member)
    gpus = [
        {
            "model": view.model,
            "total": view.total,
            "allocatable": view.allocatable,
            "free": view.free,
            "busy": view.busy,
            **(
                {"utilizationPercent": round(view.utilization_percent)}
                if view.utilization_percent is not None
                else {}
            ),
            **catalogue_fields(
                catalogue, view.model, _resource(dispatcher.fleet.pin(name, view.model))
            ),
        }
        for view in inventory
    ]
    capacity = pflops_of(catalogue, inventory)
    for state, value in capacity.items():
        metrics.MEMBER_PFLOPS.labels(name, state).set(float(value))
    reachable = dispatcher.reachable.get(name, False)
    fresh = bool(inventory) and all(view.telemetry_fresh for view in inventory)
    endpoints = bool(member.spec.telemetry_endpoints)
    conditions = [Condition.model_validate(c) for c in status.get("conditions") or []]
    true, false = ConditionStatus.TRUE, ConditionStatus.FALSE

    # No link (kubeconfig unreadable, refused, unusable) or refused credentials: the admin
    # must act, so the conditions say what and how rather than "does not answer".
    problem = dispatcher.connection_problem(name)
    verdicts = {
        MemberConditionType.REACHABLE: _reachable(reachable, problem),
        MemberConditionType.TELEMETRY_FRESH: _telemetry(endpoints, fresh),
        MemberConditionType.READY: _ready(
            reachable, problem, cordoned=member.spec.cordoned, stale=endpoints and not fresh
        ),
    }
    for kind, (ok, reason, message) in verdicts.items():
        set_condition(conditions, kind, true if ok else false, reason, message, now=now)
        metrics.MEMBER_CONDITION.labels(name, kind.value).set(1 if ok else 0)
    new_status: dict[str, Any] = {
        **status,
        "observedGeneration": member.metadata.generation,
        "gpus": gpus,
        "totalGPUs": sum(g["total"] for g in gpus),
        "freeGPUs": sum(g["free"] for g in gpus),
        "totalPFLOPS": format_pflops(capacity["total"]),
        "schedulablePFLOPS": format_pflops(capacity["schedulable"]),
        "freePFLOPS": format_pflops(capacity["free"]),
        "conditions": [
            c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions
        ],
    }
    if reachable:
        new_status["lastHeartbeatTime"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    comparable = {k: v for k, v in new_status.items() if k != "lastHeartbeatTime"}
    if comparable == {k: v for k, v in status.items() if k != "lastHeartbeatTime"}:
        # Only the heartbeat would change: write it at most every 30 s.
        last = status.get("lastHeartbeatTime")
        if last and (now - datetime.fromisoformat(last.replace("Z", "+00:00"))).seconds < 30:
            return
    written = await runtime.hub.patch_status(MEMBERCLUSTERS, None, name, {"status": new_status})
    runtime.members[name] = written


def _resource(pin: ModelPin | None) -> str | None:
    return None if pin is None else pin.resource


Verdict = tuple[bool, MemberReason, str]
"""A condition's status (True/False), reason and message."""


def _reachable(reachable: bool, problem: tuple[MemberReason, str] | None) -> Verdict:
    if problem is not None and not reachable:
        return (False, *problem)
    if reachable:
        return (True, MemberReason.API_SERVER_REACHABLE, "The member's API server answers.")
    return (
        False,
        MemberReason.API_SERVER_UNREACHABLE,
        "The member's API server does not answer; it gets no new jobs.",
    )


def _telemetry(endpoints: bool, fresh: bool) -> Verdict:
    if not endpoints:
        return (
            False,
            MemberReason.NO_TELEMETRY_ENDPOINTS,
            "No telemetry endpoints: free GPUs are judged by Kubernetes' view alone.",
        )
    if fresh:
        return (True, MemberReason.SCRAPE_SUCCEEDED, "Every GPU node's telemetry is fresh.")
    return (
        False,
        MemberReason.TELEMETRY_STALE,
        "Some GPU nodes' telemetry is stale: they are judged by Kubernetes' view.",
    )


def _ready(
    reachable: bool, problem: tuple[MemberReason, str] | None, *, cordoned: bool, stale: bool
) -> Verdict:
    if problem is not None:
        return (False, problem[0], f"Not Ready: {problem[1]}")
    if not reachable:
        return (False, MemberReason.UNREACHABLE, "Not Ready: the API server does not answer.")
    if cordoned:
        return (
            False,
            MemberReason.CORDONED,
            "Cordoned by an admin (spec.cordoned): no new jobs; running ones continue.",
        )
    if stale:
        return (
            False,
            MemberReason.TELEMETRY_STALE,
            "Telemetry is stale; jobs are still placed by Kubernetes' view of free GPUs.",
        )
    return (True, MemberReason.MEMBER_READY, "Takes new jobs.")
