"""The admission Lease's rules: who may take it, and when a new leader may admit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from suanli.leadership import LeaseRecord, LeaseSettings, admit_after, may_take

NOW = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
TIMEOUT = 30.0
DURATION = 15.0


def record(
    holder: str | None, renewed: datetime | None = NOW, settled: bool = False
) -> LeaseRecord:
    return LeaseRecord(holder, renewed, DURATION, 1, settled, "7")


def test_a_free_or_own_lease_may_be_taken_at_once() -> None:
    assert may_take(record(None), "me", first_seen=100.0, now=100.0, duration=DURATION)
    assert may_take(record("me"), "me", first_seen=100.0, now=100.0, duration=DURATION)


def test_another_holder_is_waited_out_on_our_own_clock() -> None:
    held = record("other", renewed=NOW - timedelta(days=1))  # its clock says long ago
    assert not may_take(held, "me", first_seen=100.0, now=114.9, duration=DURATION)
    assert may_take(held, "me", first_seen=100.0, now=115.0, duration=DURATION)


def test_the_longer_of_our_duration_and_the_lease_s_own_is_waited_out() -> None:
    held = LeaseRecord("other", NOW, 60.0, 1, False, "7")
    assert not may_take(held, "me", first_seen=0.0, now=59.0, duration=DURATION)
    assert may_take(held, "me", first_seen=0.0, now=60.0, duration=DURATION)


def test_no_wait_without_a_predecessor_or_after_a_settled_release() -> None:
    assert admit_after(None, NOW, TIMEOUT, DURATION) == NOW
    released = record(None, renewed=NOW, settled=True)
    assert admit_after(released, NOW, TIMEOUT, DURATION) == NOW


def test_a_release_with_holds_in_flight_is_waited_out() -> None:
    released = record(None, renewed=NOW, settled=False)
    assert admit_after(released, NOW, TIMEOUT, DURATION) == NOW + timedelta(seconds=TIMEOUT)


def test_after_a_crash_the_wait_ends_a_webhook_timeout_after_the_leader_must_have_stopped() -> None:
    crashed = record("other", renewed=NOW)
    taken = NOW + timedelta(seconds=DURATION + 1)
    expected = NOW + timedelta(seconds=DURATION + TIMEOUT)
    assert admit_after(crashed, taken, TIMEOUT, DURATION) == expected


def test_a_predecessor_dead_for_long_costs_no_wait() -> None:
    crashed = record("other", renewed=NOW - timedelta(hours=1))
    assert admit_after(crashed, NOW, TIMEOUT, DURATION) == NOW


def test_a_clock_far_ahead_never_delays_more_than_the_webhook_timeout() -> None:
    ahead = record("other", renewed=NOW + timedelta(hours=1))
    assert admit_after(ahead, NOW, TIMEOUT, DURATION) == NOW + timedelta(seconds=TIMEOUT)


def test_lease_timings_must_let_the_leader_stop_before_another_starts() -> None:
    with pytest.raises(ValueError, match="renew deadline"):
        LeaseSettings(namespace="ns", duration=10, renew_deadline=10, retry=2)
    LeaseSettings(namespace="ns", duration=15, renew_deadline=10, retry=2)


def test_a_lease_body_is_read_with_micro_time_and_the_settled_mark() -> None:
    body = {
        "metadata": {"resourceVersion": "42", "annotations": {"suanli.io/holds-settled": "true"}},
        "spec": {"holderIdentity": "", "renewTime": "2026-03-01T08:00:00.123456Z"},
    }
    parsed = LeaseRecord.from_body(body)
    assert parsed.holder is None and parsed.settled and parsed.resource_version == "42"
    assert parsed.renewed == NOW + timedelta(microseconds=123456)
