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
from suanli.api.common import Condition, ConditionStatus, set_condition
from suanli.api.meta import GROUP, VERSION
from suanli.api.reasons import MemberConditionType, MemberReason
from suanli.handlers.runtime import Runtime

logger = logging.getLogger(__name__)

STATUS_INTERVAL: Final = 5.0


@kopf.on.startup()
async def membercluster_prime(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    runtime.dispatcher.start()
    try:
        members = await runtime.hub.list("memberclusters")
    except Exception:  # the watch delivers them as well; start-up must not stall on it
        logger.exception("listing MemberClusters at start-up failed; the watch will add them")
        members = []
    for member in members:
        runtime.members[member["metadata"]["name"]] = member
        await runtime.dispatcher.member_upsert(member)

    async def status_loop() -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            for name in list(runtime.dispatcher.members):
                try:
                    await write_member_status(runtime, name)
                except Exception:  # one member's failure must not stop the others' status
                    logger.exception("status of member %s failed", name)

    runtime.spawn(status_loop())


@kopf.on.cleanup()
async def membercluster_disconnect(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    await runtime.dispatcher.stop()


@kopf.on.event(GROUP, VERSION, "memberclusters")
async def membercluster_event(
    type: str | None, event: kopf.RawEvent, name: str, memo: kopf.Memo, **_: Any
) -> None:
    runtime: Runtime = memo.runtime
    body = cast(dict[str, Any], event["object"])
    if type == "DELETED":
        runtime.members.pop(name, None)
        await runtime.dispatcher.member_delete(name)
    else:
        runtime.members[name] = body
        await runtime.dispatcher.member_upsert(body)


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
        }
        for view in inventory
    ]
    reachable = dispatcher.reachable.get(name, False)
    fresh = bool(inventory) and all(view.telemetry_fresh for view in inventory)
    endpoints = bool(member.spec.telemetry_endpoints)
    conditions = [Condition.model_validate(c) for c in status.get("conditions") or []]
    true, false = ConditionStatus.TRUE, ConditionStatus.FALSE

    def put(kind: MemberConditionType, ok: bool, reason: MemberReason, message: str) -> None:
        set_condition(conditions, kind, true if ok else false, reason, message, now=now)

    put(
        MemberConditionType.REACHABLE,
        reachable,
        MemberReason.API_SERVER_REACHABLE if reachable else MemberReason.API_SERVER_UNREACHABLE,
        "The member's API server answers."
        if reachable
        else "The member's API server does not answer; it gets no new jobs.",
    )
    if not endpoints:
        put(
            MemberConditionType.TELEMETRY_FRESH,
            False,
            MemberReason.NO_TELEMETRY_ENDPOINTS,
            "No telemetry endpoints: free GPUs are judged by Kubernetes' view alone.",
        )
    elif fresh:
        put(
            MemberConditionType.TELEMETRY_FRESH,
            True,
            MemberReason.SCRAPE_SUCCEEDED,
            "Every GPU node's telemetry is fresh.",
        )
    else:
        put(
            MemberConditionType.TELEMETRY_FRESH,
            False,
            MemberReason.TELEMETRY_STALE,
            "Some GPU nodes' telemetry is stale: they are judged by Kubernetes' view.",
        )
    if not reachable:
        put(
            MemberConditionType.READY,
            False,
            MemberReason.UNREACHABLE,
            "Not Ready: the API server does not answer.",
        )
    elif member.spec.cordoned:
        put(
            MemberConditionType.READY,
            False,
            MemberReason.CORDONED,
            "Cordoned by an admin (spec.cordoned): no new jobs; running ones continue.",
        )
    elif endpoints and not fresh:
        put(
            MemberConditionType.READY,
            False,
            MemberReason.TELEMETRY_STALE,
            "Telemetry is stale; jobs are still placed by Kubernetes' view of free GPUs.",
        )
    else:
        put(MemberConditionType.READY, True, MemberReason.MEMBER_READY, "Takes new jobs.")
    new_status: dict[str, Any] = {
        **status,
        "observedGeneration": member.metadata.generation,
        "gpus": gpus,
        "totalGPUs": sum(g["total"] for g in gpus),
        "freeGPUs": sum(g["free"] for g in gpus),
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
    written = await runtime.hub.patch_status("memberclusters", None, name, {"status": new_status})
    runtime.members[name] = written
