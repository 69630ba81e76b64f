"""Which finished ComputeJobs leave the hub after --job-retention: only finished and charged
ones, once their finish is the retention in the past; and `suanli run --job-retention`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from suanli.cli import build_parser
from suanli.controller.retention import MAX_PASS_SECONDS, MIN_PASS_SECONDS, due, pass_interval

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def job(
    name: str,
    *,
    phase: str | None = "Succeeded",
    charged: str | None = "12.50",
    finished: datetime | None = NOW - 2 * DAY,
    **status: Any,
) -> dict[str, Any]:
    """A stored ComputeJob as the API server lists it; finished ``finished`` (completionTime)."""
    body_status: dict[str, Any] = {"voucher": "budget", **status}
    if phase is not None:
        body_status["phase"] = phase
    if charged is not None:
        body_status["chargedCost"] = charged
    if finished is not None:
        body_status["completionTime"] = finished.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "suanli.io/v1alpha1",
        "kind": "ComputeJob",
        "metadata": {"name": name, "namespace": "tenant-a", "uid": f"uid-{name}"},
        "spec": {"replicas": 1, "maxRuntime": "1h", "template": {"spec": {"containers": []}}},
        "status": body_status,
    }


def names(jobs: list[dict[str, Any]], retention: timedelta = DAY) -> list[str]:
    return [found.name for found in due(jobs, now=NOW, retention=retention)]


def test_succeeded_and_failed_charged_jobs_are_due_once_the_retention_has_passed() -> None:
    jobs = [
        job("succeeded", finished=NOW - 2 * DAY),
        job("failed", phase="Failed", charged="0.00", finished=NOW - 3 * DAY),
        job("exactly", finished=NOW - DAY),
        job("recent", finished=NOW - DAY + timedelta(seconds=1)),
    ]
    # The longest finished first; one finished a second too recently stays.
    assert names(jobs) == ["failed", "succeeded", "exactly"]
    (first, *_) = due(jobs, now=NOW, retention=DAY)
    assert (first.namespace, first.uid, first.voucher) == ("tenant-a", "uid-failed", "budget")


def test_a_job_whose_charge_is_not_recorded_is_never_due() -> None:
    years = 10 * 365 * DAY
    jobs = [
        job("uncharged", charged=None, finished=NOW - years),
        # Rejected: admitted without a hold (a bypassed webhook), nothing charged.
        job("rejected", phase="Rejected", charged=None, finished=None),
        job("failed-uncharged", phase="Failed", charged=None, finished=NOW - years),
    ]
    assert names(jobs, retention=timedelta(seconds=1)) == []


def test_a_job_that_has_not_finished_is_never_due() -> None:
    jobs = [
        job(f"{phase.lower()}", phase=phase, finished=NOW - 30 * DAY)
        for phase in ("Pending", "Queued", "Dispatched", "Running")
    ]
    jobs.append(job("no-phase", phase=None, finished=NOW - 30 * DAY))
    assert names(jobs) == []


def test_the_finish_time_falls_back_to_the_finished_condition() -> None:
    condition = {
        "type": "Finished",
        "status": "True",
        "reason": "Succeeded",
        "message": "done",
        "lastTransitionTime": (NOW - 2 * DAY).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    not_finished = {**condition, "status": "False"}
    jobs = [
        job("by-condition", finished=None, conditions=[condition]),
        job("condition-false", finished=None, conditions=[not_finished]),
        job("no-time", finished=None),
        job("bad-time", finished=None, completionTime="yesterday"),
    ]
    assert names(jobs) == ["by-condition"]


def test_a_job_being_deleted_is_left_to_its_finalizer() -> None:
    deleting = job("deleting", finished=NOW - 5 * DAY)
    deleting["metadata"]["deletionTimestamp"] = "2026-12-01T11:00:00Z"
    assert names([deleting]) == []


@given(
    phase=st.sampled_from(
        [None, "Pending", "Queued", "Dispatched", "Running", "Succeeded", "Failed", "Rejected"]
    ),
    age=st.integers(min_value=0, max_value=10 * 365 * 86400),
    retention=st.integers(min_value=1, max_value=365 * 86400),
    charged=st.sampled_from([None, "0.00", "1.00"]),
)
def test_due_only_when_finished_charged_and_older_than_the_retention(
    phase: str | None, age: int, retention: int, charged: str | None
) -> None:
    finished = NOW - timedelta(seconds=age)
    selected = names(
        [job("j", phase=phase, charged=charged, finished=finished)], timedelta(seconds=retention)
    )
    finished_phase = phase in ("Succeeded", "Failed", "Rejected")
    assert (selected == ["j"]) == (finished_phase and charged is not None and age >= retention)


def test_passes_come_a_quarter_retention_apart_within_bounds() -> None:
    assert pass_interval(timedelta(seconds=2)) == MIN_PASS_SECONDS
    assert pass_interval(timedelta(seconds=40)) == 10.0
    assert pass_interval(30 * DAY) == MAX_PASS_SECONDS


def test_suanli_run_keeps_jobs_unless_given_a_positive_retention(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    assert parser.parse_args(["run"]).job_retention is None
    assert parser.parse_args(["run", "--job-retention", "2592000"]).job_retention == 2592000.0
    for refused in ("0", "-5", "nan", "inf", "30d"):
        with pytest.raises(SystemExit):
            parser.parse_args(["run", "--job-retention", refused])
        assert "--job-retention" in capsys.readouterr().err
