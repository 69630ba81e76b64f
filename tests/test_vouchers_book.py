"""The admission leader's in-memory ledgers: pending holds, their expiry, and the rebuild.

The book is synchronous and takes time as an argument, so every rule is tested without a clock:
a hold admitted is counted at once, written to the voucher's status only once its job was seen
stored, and dropped if its deadline passes first; a new leader rebuilds the same ledger from the
voucher's status and the jobs that exist.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suanli.api.computejob import ComputeJob
from suanli.api.names import HOLD_ANNOTATION
from suanli.vouchers.book import VoucherBook
from suanli.vouchers.holds import QuotedHold, read_hold
from suanli.vouchers.ledger import Ledger, ReservationRequest, VoucherTerms
from suanli.vouchers.recount import recount, restore_hold

NOW = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
TIMEOUT = timedelta(seconds=10)
KEY = ("team-a", "gpu-2026")
D = Decimal


def book(amount: str = "100.00") -> VoucherBook:
    loaded = VoucherBook()
    loaded.load(KEY, Ledger(VoucherTerms("team-a/gpu-2026", "CNY", D(amount))))
    return loaded


def req(uid: str, amount: str = "10.00", gpus: int = 1) -> ReservationRequest:
    return ReservationRequest(uid, f"team-a/{uid}", D(amount), gpus, NOW)


def job(uid: str, hold: QuotedHold | None, status: dict[str, Any] | None = None) -> ComputeJob:
    annotations = {HOLD_ANNOTATION: hold.annotation()} if hold else {}
    return ComputeJob.model_validate(
        {
            "metadata": {
                "name": uid,
                "namespace": "team-a",
                "uid": uid,
                "annotations": annotations,
                "creationTimestamp": "2026-03-01T07:59:59Z",
            },
            "spec": {
                "gpusPerReplica": 1,
                "maxRuntime": "1h",
                "template": {"spec": {"containers": [{"name": "main", "image": "x"}]}},
            },
            "status": status or {},
        }
    )


def test_an_admitted_hold_counts_at_once_but_is_recorded_only_once_its_job_is_stored() -> None:
    state = book()
    assert state.admit(KEY, req("u1"), NOW + TIMEOUT).admitted
    assert state.ledger(KEY).reserved == D("10.00")  # type: ignore[union-attr]
    assert state.is_pending("u1")
    assert state.durable(KEY).reserved == 0  # type: ignore[union-attr]
    assert state.confirm("u1") == KEY
    assert not state.is_pending("u1")
    assert state.durable(KEY).reserved == D("10.00")  # type: ignore[union-attr]
    assert state.confirm("u1") is None  # confirming twice changes nothing


def test_a_hold_whose_job_never_came_is_dropped_at_its_deadline_and_costs_nothing() -> None:
    state = book("10.00")
    state.admit(KEY, req("ghost"), NOW + TIMEOUT)
    assert not state.admit(KEY, req("real"), NOW + TIMEOUT).admitted  # the ghost holds it all
    assert state.due(NOW + TIMEOUT - timedelta(microseconds=1)) == []
    assert [hold.uid for hold in state.due(NOW + TIMEOUT)] == ["ghost"]
    assert state.drop("ghost") == KEY
    ledger = state.ledger(KEY)
    assert ledger is not None and ledger.reserved == 0 and ledger.spent == 0
    assert "ghost" not in ledger.entries
    assert state.admit(KEY, req("real"), NOW + TIMEOUT).admitted
    assert state.drop("ghost") is None


def test_dropping_a_confirmed_hold_is_impossible() -> None:
    state = book()
    state.admit(KEY, req("u1"), NOW + TIMEOUT)
    state.confirm("u1")
    assert state.drop("u1") is None
    assert state.ledger(KEY).reserved == D("10.00")  # type: ignore[union-attr]


def test_a_repeated_review_of_the_same_job_holds_once() -> None:
    state = book()
    state.admit(KEY, req("u1"), NOW + TIMEOUT)
    state.confirm("u1")
    assert state.admit(KEY, req("u1"), NOW + 2 * TIMEOUT).admitted
    assert not state.is_pending("u1")  # still stored, not pending again
    assert state.ledger(KEY).reserved == D("10.00")  # type: ignore[union-attr]


def test_loading_never_replaces_what_memory_knows() -> None:
    state = book()
    state.admit(KEY, req("u1"), NOW + TIMEOUT)
    stale = Ledger(VoucherTerms("team-a/gpu-2026", "CNY", D("100.00")))
    assert state.load(KEY, stale) is state.ledger(KEY)
    assert "u1" in state.ledger(KEY).entries  # type: ignore[union-attr]


def test_forgetting_a_voucher_forgets_its_pending_holds() -> None:
    state = book()
    state.admit(KEY, req("u1"), NOW + TIMEOUT)
    state.forget(KEY)
    assert not state.knows(KEY) and state.pending_count() == 0


def test_an_unloaded_voucher_cannot_admit() -> None:
    with pytest.raises(KeyError):
        VoucherBook().admit(KEY, req("u1"), NOW)


@settings(max_examples=200, deadline=None)
@given(
    amounts=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=60),
    budget=st.integers(min_value=0, max_value=400),
    stored=st.sets(st.integers(min_value=0, max_value=59)),
)
def test_requests_admit_exactly_what_the_voucher_affords_and_the_rebuild_agrees(
    amounts: list[int], budget: int, stored: set[int]
) -> None:
    """Whatever arrives, memory never passes the ceiling; once the unstored holds are dropped,
    a new leader rebuilding from the recorded status and the stored jobs finds the same holds."""
    state = book(f"{budget}.00")
    admitted: list[int] = []
    for index, amount in enumerate(amounts):
        if state.admit(KEY, req(f"u{index:02d}", f"{amount}.00"), NOW + TIMEOUT).admitted:
            admitted.append(index)
    ledger = state.ledger(KEY)
    assert ledger is not None and ledger.committed <= budget
    assert ledger.reserved == sum(amounts[i] for i in admitted)
    for index in admitted:
        if index in stored:
            state.confirm(f"u{index:02d}")
    for hold in state.due(NOW + TIMEOUT):
        state.drop(hold.uid)
    recorded = state.durable(KEY)
    assert recorded is not None and recorded == state.ledger(KEY)
    jobs = [
        job(f"u{i:02d}", QuotedHold("gpu-2026", D(f"{amounts[i]}.00"), 1))
        for i in admitted
        if i in stored
    ]
    empty = Ledger(recorded.terms)
    rebuilt = recount(empty, jobs, now=NOW, grace=TIMEOUT).ledger
    assert set(rebuilt.entries) == set(recorded.entries)
    assert rebuilt.reserved == recorded.reserved


def test_a_stored_job_proves_its_hold_by_its_annotation_before_its_status_says_anything() -> None:
    hold = QuotedHold("gpu-2026", D("28.00"), 1)
    empty = Ledger(VoucherTerms("team-a/gpu-2026", "CNY", D("100.00")))
    restored = restore_hold(empty, job("u1", hold), now=NOW)
    assert restored.entries["u1"].hold == D("28.00") and restored.entries["u1"].gpus == 1
    # Another voucher's hold, or none, proves nothing here.
    other = QuotedHold("other", D("28.00"), 1)
    assert restore_hold(empty, job("u2", other), now=NOW) is empty
    assert restore_hold(empty, job("u3", None), now=NOW) is empty
    # A job whose status records its end holds nothing, whatever its annotation says.
    ended = job("u4", hold, {"voucher": "gpu-2026", "reservation": "0.00", "totalGPUs": 1})
    assert restore_hold(empty, ended, now=NOW) is empty


def test_the_recount_leaves_in_flight_holds_alone_however_old() -> None:
    state = book()
    state.admit(KEY, ReservationRequest("u1", "team-a/u1", D("10.00"), 1, NOW), NOW + TIMEOUT)
    ledger = state.ledger(KEY)
    assert ledger is not None
    late = NOW + timedelta(hours=1)
    kept = recount(ledger, [], now=late, grace=TIMEOUT, in_flight={"u1"})
    assert "u1" in kept.ledger.entries
    released = recount(ledger, [], now=late, grace=TIMEOUT)
    assert "u1" not in released.ledger.entries


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        '{"voucher": "", "amount": "1.00", "gpus": 1}',
        '{"voucher": "v", "amount": "-1.00", "gpus": 1}',
        '{"voucher": "v", "amount": "1.00", "gpus": true}',
        '{"voucher": "v", "amount": "1.00"}',
    ],
)
def test_a_hold_annotation_suanli_did_not_write_is_no_hold(text: str) -> None:
    assert read_hold({HOLD_ANNOTATION: text}) is None


def test_a_hold_annotation_reads_back_what_was_written() -> None:
    hold = QuotedHold("gpu-2026", D("1234.50"), 8)
    assert hold.annotation() == '{"amount":"1234.50","gpus":8,"voucher":"gpu-2026"}'
    assert read_hold({HOLD_ANNOTATION: hold.annotation()}) == hold
