"""`suanli status`'s report, from hub objects as the API returns them (no cluster)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from suanli.status.report import leader_line, member_line, render, vouchers_near_exhaustion

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def member(name: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {}, "status": status}


def condition(kind: str, value: str, reason: str = "R", at: str = "2026-05-01T11:00:00Z") -> Any:
    return {"type": kind, "status": value, "reason": reason, "lastTransitionTime": at}


def test_a_healthy_member_shows_its_conditions_heartbeat_and_gpus() -> None:
    line = member_line(
        member(
            "member-a",
            conditions=[
                condition("Ready", "True"),
                condition("Reachable", "True"),
                condition("TelemetryFresh", "True"),
            ],
            lastHeartbeatTime="2026-05-01T11:59:45Z",
            freeGPUs=30,
            totalGPUs=32,
            gpus=[{"model": "H100", "free": 30, "total": 32}],
        ),
        NOW,
    )
    assert (line.ready, line.reachable, line.heartbeat, line.telemetry, line.gpus) == (
        "True",
        "True",
        "15s ago",
        "fresh",
        "30/32 (H100 30/32)",
    )


def test_a_lost_member_shows_since_when() -> None:
    line = member_line(
        member(
            "member-b",
            conditions=[
                condition("Ready", "False"),
                condition("Reachable", "False"),
                condition("TelemetryFresh", "False", "TelemetryStale", "2026-05-01T11:50:00Z"),
            ],
            lastHeartbeatTime="2026-05-01T10:30:00Z",
        ),
        NOW,
    )
    assert (line.ready, line.reachable, line.heartbeat, line.telemetry) == (
        "False",
        "False",
        "1h30m ago",
        "stale since 10m ago",
    )


def test_a_member_not_yet_seen_by_the_operator() -> None:
    line = member_line(member("member-c"), NOW)
    assert (line.ready, line.heartbeat, line.telemetry, line.gpus) == (
        "Unknown",
        "never",
        "unknown",
        "0/0",
    )


def lease(holder: str | None, renewed: str, duration: int = 15) -> dict[str, Any]:
    return {
        "spec": {"holderIdentity": holder, "renewTime": renewed, "leaseDurationSeconds": duration}
    }


def test_the_admission_leader_is_the_lease_holder_while_it_renews() -> None:
    assert leader_line(lease("pod-a", "2026-05-01T11:59:55Z"), "ns", NOW) == (
        "pod-a (renewed 5s ago)"
    )


def test_no_lease_no_holder_or_a_lapsed_lease_is_no_leader() -> None:
    assert leader_line(None, "ns", NOW) == "none (no Lease suanli-admission in ns)"
    assert leader_line(lease(None, "2026-05-01T11:59:55Z"), "ns", NOW).startswith("none")
    lapsed = leader_line(lease("pod-a", "2026-05-01T11:58:00Z"), "ns", NOW)
    assert lapsed == "none: pod-a let its Lease lapse (renewed 2m ago)"


def voucher(name: str, amount: str, remaining: str | None) -> dict[str, Any]:
    status = {} if remaining is None else {"remaining": remaining}
    return {
        "metadata": {"namespace": "t", "name": name},
        "spec": {"amount": amount, "currency": "CNY"},
        "status": status,
    }


def test_vouchers_with_under_a_tenth_left_are_listed() -> None:
    listed = vouchers_near_exhaustion(
        [
            voucher("low", "1000", "99.99"),
            voucher("edge", "1000", "100"),
            voucher("fresh", "1000", None),  # not yet counted by the operator: all of it left
            voucher("empty", "1000", "0"),
        ]
    )
    assert listed == ["t/empty: 0 of 1000 CNY left", "t/low: 99.99 of 1000 CNY left"]


def test_the_report_counts_jobs_and_names_the_oldest_queued() -> None:
    jobs = [
        {"metadata": {"creationTimestamp": "2026-05-01T11:00:00Z"}, "status": {"phase": "Queued"}},
        {"metadata": {"creationTimestamp": "2026-05-01T11:30:00Z"}, "status": {"phase": "Queued"}},
        {"metadata": {"creationTimestamp": "2026-05-01T11:50:00Z"}, "status": {"phase": "Running"}},
        {"metadata": {"creationTimestamp": "2026-05-01T11:59:00Z"}},
    ]
    text = render(
        server="https://hub",
        members=[],
        leader=leader_line(None, "suanli-system", NOW),
        jobs=jobs,
        vouchers=[],
        now=NOW,
    )
    assert "jobs: 1 pending, 2 queued, 1 running, oldest queued job created 1h ago" in text
    assert "members: none joined" in text
    assert "vouchers with less than 10% left: none" in text
    assert "admission leader: none (no Lease suanli-admission in suanli-system)" in text
