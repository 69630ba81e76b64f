"""The federation at a glance: what an on-call admin asks first, from the hub's objects.

Pure: it takes the objects as the hub's API returns them (dicts) and the time, and returns
lines; :mod:`suanli.status.commands` reads the hub. Members come first (can jobs run?), then
admission (can jobs come in?), then the queue and the vouchers running out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from suanli.api.common import format_duration, parse_timestamp
from suanli.api.names import LEASE_NAME
from suanli.monitoring.alerts import VOUCHER_LOW_FRACTION

Obj = dict[str, Any]


def _ago(then: str | None, now: datetime) -> str:
    if not then:
        return "never"
    try:
        seconds = int((now - parse_timestamp(then)).total_seconds())
    except ValueError:
        return "unknown"
    return f"{format_duration(max(0, seconds))} ago"


def _conditions(body: Obj) -> dict[str, Obj]:
    return {c.get("type", ""): c for c in (body.get("status") or {}).get("conditions") or []}


@dataclass(frozen=True)
class MemberLine:
    name: str
    ready: str
    reachable: str
    heartbeat: str
    telemetry: str
    gpus: str


def member_line(body: Obj, now: datetime) -> MemberLine:
    status = body.get("status") or {}
    conditions = _conditions(body)
    ready = conditions.get("Ready", {})
    telemetry = conditions.get("TelemetryFresh", {})
    if telemetry.get("status") == "True":
        telemetry_text = "fresh"
    elif telemetry.get("reason") == "NoTelemetryEndpoints":
        telemetry_text = "no endpoints"
    elif telemetry:
        telemetry_text = f"stale since {_ago(telemetry.get('lastTransitionTime'), now)}"
    else:
        telemetry_text = "unknown"
    models = ", ".join(
        f"{g.get('model')} {g.get('free', 0)}/{g.get('total', 0)}" for g in status.get("gpus") or []
    )
    gpus = f"{status.get('freeGPUs', 0)}/{status.get('totalGPUs', 0)}"
    cordoned = " cordoned" if (body.get("spec") or {}).get("cordoned") else ""
    return MemberLine(
        name=body["metadata"]["name"],
        ready=(ready.get("status") or "Unknown") + cordoned,
        reachable=conditions.get("Reachable", {}).get("status") or "Unknown",
        heartbeat=_ago(status.get("lastHeartbeatTime"), now),
        telemetry=telemetry_text,
        gpus=f"{gpus} ({models})" if models else gpus,
    )


def leader_line(lease: Obj | None, namespace: str, now: datetime) -> str:
    """Who holds the admission Lease, and whether it is still current."""
    if lease is None:
        return f"none (no Lease {LEASE_NAME} in {namespace})"
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity")
    if not holder:
        return f"none (Lease {namespace}/{LEASE_NAME} has no holder)"
    renewed = spec.get("renewTime")
    line = f"{holder} (renewed {_ago(renewed, now)})"
    duration = spec.get("leaseDurationSeconds")
    if renewed and duration is not None:
        try:
            age = (now - parse_timestamp(renewed)).total_seconds()
        except ValueError:
            return line
        if age > float(duration):
            return f"none: {holder} let its Lease lapse (renewed {_ago(renewed, now)})"
    return line


def jobs_line(jobs: list[Obj], now: datetime) -> str:
    phases = Counter((j.get("status") or {}).get("phase") or "Pending" for j in jobs)
    if not jobs:
        return "none"
    parts = [f"{count} {phase.lower()}" for phase, count in sorted(phases.items())]
    queued = [
        j["metadata"].get("creationTimestamp")
        for j in jobs
        if (j.get("status") or {}).get("phase") == "Queued"
    ]
    oldest = min((t for t in queued if t), default=None)
    if oldest is not None:
        parts.append(f"oldest queued job created {_ago(oldest, now)}")
    return ", ".join(parts)


def _decimal(value: object) -> Decimal | None:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def vouchers_near_exhaustion(vouchers: list[Obj]) -> list[str]:
    """Vouchers with less than :data:`VOUCHER_LOW_FRACTION` of their amount left."""
    lines: list[str] = []
    for voucher in vouchers:
        spec, status = voucher.get("spec") or {}, voucher.get("status") or {}
        amount = _decimal(spec.get("amount"))
        remaining = _decimal(status.get("remaining", spec.get("amount")))
        if amount is None or remaining is None or amount <= 0:
            continue
        if remaining / amount < Decimal(str(VOUCHER_LOW_FRACTION)):
            meta = voucher["metadata"]
            lines.append(
                f"{meta.get('namespace')}/{meta['name']}: {remaining} of {amount} "
                f"{spec.get('currency', '')} left".rstrip()
            )
    return sorted(lines)


def render(
    *,
    server: str,
    members: list[Obj],
    leader: str,  # leader_line()'s answer, or why the Lease could not be read
    jobs: list[Obj],
    vouchers: list[Obj],
    now: datetime,
) -> str:
    lines = [f"hub {server}", ""]
    rows = [member_line(m, now) for m in sorted(members, key=lambda m: m["metadata"]["name"])]
    header = MemberLine("MEMBER", "READY", "REACHABLE", "HEARTBEAT", "TELEMETRY", "FREE/TOTAL GPUS")
    if rows:
        widths = [max(len(getattr(r, f)) for r in [header, *rows]) for f in _FIELDS]
        for row in [header, *rows]:
            cells = [getattr(row, f).ljust(w) for f, w in zip(_FIELDS, widths, strict=True)]
            lines.append("  ".join(cells).rstrip())
    else:
        lines.append("members: none joined (see docs/cluster-admins.md, Join a member cluster)")
    lines += [
        "",
        f"admission leader: {leader}",
        f"jobs: {jobs_line(jobs, now)}",
    ]
    low = vouchers_near_exhaustion(vouchers)
    percent = round(VOUCHER_LOW_FRACTION * 100)
    if low:
        lines.append(f"vouchers with less than {percent}% left:")
        lines += [f"  {line}" for line in low]
    else:
        lines.append(f"vouchers with less than {percent}% left: none")
    return "\n".join(lines) + "\n"


_FIELDS: Final = ("name", "ready", "reachable", "heartbeat", "telemetry", "gpus")
