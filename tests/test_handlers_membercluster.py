"""A member that leaves the federation leaves no series behind: every per-member gauge the
operator exports is dropped for it, so dashboards and alerts stop showing it."""

from __future__ import annotations

from prometheus_client import Gauge

from suanli import metrics
from suanli.handlers.membercluster import forget_member_metrics


def _member_gauges() -> list[Gauge]:
    return [
        value
        for value in vars(metrics).values()
        if isinstance(value, Gauge) and "member" in value._labelnames
    ]


def test_every_gauge_of_a_departed_member_is_dropped() -> None:
    gauges = _member_gauges()
    assert metrics.MEMBER_PFLOPS in gauges
    for gauge in gauges:
        other = ["gone-member" if name == "member" else "x" for name in gauge._labelnames]
        gauge.labels(*other).set(1)
        gauge.labels(*["stays" if n == "member" else "x" for n in gauge._labelnames]).set(1)
    forget_member_metrics("gone-member")
    for gauge in gauges:
        members = {
            sample.labels.get("member") for family in gauge.collect() for sample in family.samples
        }
        assert "gone-member" not in members, gauge._name
        assert "stays" in members, gauge._name
