"""The voucher ledger: reserve, settle exactly once, release, batch commit, recount, persistence.

The property tests drive the ledger with arbitrary sequences of operations (repeats and invalid
ones included) and check the invariants the design promises: ``reserved + spent`` never passes
``amount + creditLine``, ``spent`` is the sum of the charges made, a job is charged at most
once, and a batch of N requests against a voucher that affords K admits exactly K.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suanli.api.computejob import ComputeJob
from suanli.api.voucherquota import VoucherQuota, VoucherQuotaStatus
from suanli.vouchers.batch import commit_batch
from suanli.vouchers.ledger import (
    EntryState,
    Ledger,
    LedgerError,
    NotReservedError,
    ReservationRefusedError,
    ReservationRequest,
    VoucherTerms,
    empty_ledger,
)
from suanli.vouchers.recount import entry_from_job, rebuild, recount
from suanli.vouchers.refusals import RefusalReason

NOW = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
D = Decimal


def terms(amount: str = "10000.00", credit: str = "0.00", **caps: int | None) -> VoucherTerms:
    return VoucherTerms("team-a/gpu-2026", "CNY", D(amount), D(credit), **caps)


def ledger(amount: str = "10000.00", credit: str = "0.00", **caps: int | None) -> Ledger:
    return Ledger(terms(amount, credit, **caps))


# --- reserve ------------------------------------------------------------------------------------


def test_reserve_holds_money_and_gpus():
    before = ledger()
    after = before.reserve("team-a/a", D("3000.00"), 8, at=NOW)
    assert before.reserved == 0  # the original is untouched
    assert after.reserved == D("3000.00")
    assert after.active_jobs == 1
    assert after.active_gpus == 8
    assert after.available == D("7000.00")
    assert after.entries["team-a/a"].reserved_at == NOW
    with pytest.raises(TypeError):
        after.entries["team-a/b"] = after.entries["team-a/a"]  # type: ignore[index]


def test_reserve_is_idempotent_for_the_same_request():
    once = ledger().reserve("team-a/a", D("3000.00"), 8)
    assert once.reserve("team-a/a", D("3000.00"), 8) is once


def test_reserve_refuses_a_different_amount_for_a_held_job():
    once = ledger().reserve("team-a/a", D("3000.00"), 8)
    with pytest.raises(ReservationRefusedError) as caught:
        once.reserve("team-a/a", D("3000.01"), 8)
    assert caught.value.reason is RefusalReason.RESERVATION_CONFLICT
    assert "already holds 3000.00 CNY for 8 GPUs" in str(caught.value)


def test_reserve_refuses_over_the_ceiling_exactly():
    full = ledger("100.00", "50.00").reserve("team-a/a", D("150.00"), 1)  # exactly the ceiling
    assert full.available == 0
    with pytest.raises(ReservationRefusedError) as caught:
        full.reserve("team-a/b", D("0.01"), 1)
    assert caught.value.reason is RefusalReason.INSUFFICIENT_BALANCE
    assert str(caught.value) == (
        "voucher team-a/gpu-2026 cannot cover this job: worst case 0.01 CNY, available 0.00 CNY "
        "(amount 100.00 + credit 50.00 - spent 0.00 - reserved 150.00): short by 0.01 CNY"
    )


def test_reserve_enforces_the_concurrency_caps():
    capped = ledger(max_concurrent_gpus=8, max_concurrent_jobs=2).reserve("team-a/a", D(1), 6)
    with pytest.raises(ReservationRefusedError) as caught:
        capped.reserve("team-a/b", D(1), 3)
    assert caught.value.reason is RefusalReason.CONCURRENT_GPUS_EXCEEDED
    assert "9 in all: 1 over" in str(caught.value)
    two = capped.reserve("team-a/b", D(1), 2)
    with pytest.raises(ReservationRefusedError) as caught:
        two.reserve("team-a/c", D(1), 0)
    assert caught.value.reason is RefusalReason.CONCURRENT_JOBS_EXCEEDED
    # Charged or released jobs free their slot and GPUs.
    assert two.release("team-a/a").reserve("team-a/c", D(1), 6).active_gpus == 8


def test_reserve_refuses_a_closed_job_and_bad_inputs():
    charged = ledger().reserve("team-a/a", D(10), 1).settle("team-a/a", D(5))
    with pytest.raises(ReservationRefusedError) as caught:
        charged.reserve("team-a/a", D(10), 1)
    assert caught.value.reason is RefusalReason.JOB_CLOSED
    with pytest.raises(ValueError, match="two decimal"):
        ledger().reserve("team-a/a", D("1.001"), 1)
    with pytest.raises(ValueError, match="negative"):
        ledger().reserve("team-a/a", D(1), -1)


# --- settle, release, forget --------------------------------------------------------------------


def test_settle_moves_the_charge_to_spent_and_releases_the_rest():
    held = ledger().reserve("team-a/a", D("3000.00"), 8)
    done = held.settle("team-a/a", D("1234.56"))
    assert (done.reserved, done.spent, done.available) == (0, D("1234.56"), D("8765.44"))
    assert done.active_jobs == done.active_gpus == 0
    entry = done.entries["team-a/a"]
    assert (entry.state, entry.hold, entry.charged, entry.capped) == (
        EntryState.CHARGED,
        D("3000.00"),
        D("1234.56"),
        False,
    )


def test_settling_twice_is_a_no_op():
    done = ledger().reserve("team-a/a", D("3000.00"), 8).settle("team-a/a", D("100.00"))
    assert done.settle("team-a/a", D("100.00")) is done
    assert done.settle("team-a/a", D("999.00")) is done  # the first charge is final
    assert done.spent == D("100.00")


def test_a_charge_above_the_hold_is_capped_and_flagged():
    done = ledger().reserve("team-a/a", D("3000.00"), 8).settle("team-a/a", D("3000.50"))
    entry = done.entries["team-a/a"]
    assert entry.charged == D("3000.00")
    assert entry.metered == D("3000.50")
    assert entry.capped
    assert done.spent == D("3000.00")


def test_settle_refuses_jobs_without_a_hold():
    with pytest.raises(NotReservedError, match="unknown"):
        ledger().settle("team-a/a", D(1))
    released = ledger().reserve("team-a/a", D(10), 1).release("team-a/a")
    with pytest.raises(NotReservedError, match="released without a charge"):
        released.settle("team-a/a", D(1))
    with pytest.raises(ValueError, match="two decimal"):
        ledger().reserve("team-a/a", D(10), 1).settle("team-a/a", D("0.001"))


def test_release_and_forget():
    held = ledger().reserve("team-a/a", D("3000.00"), 8).reserve("team-a/b", D("500.00"), 1)
    released = held.release("team-a/a")
    assert released.reserved == D("500.00")
    assert released.entries["team-a/a"].state is EntryState.RELEASED
    assert released.release("team-a/a") is released
    assert released.release("team-a/nobody") is released
    # Forgetting keeps spent: the charge folds into settled.
    charged = released.settle("team-a/b", D("400.00"))
    forgotten = charged.forget("team-a/b").forget("team-a/a")
    assert forgotten.entries == {}
    assert (forgotten.settled, forgotten.spent) == (D("400.00"), D("400.00"))
    # An active hold is never forgotten silently.
    assert held.forget("team-a/a") is held


def test_balances_with_a_credit_line():
    used = (
        ledger("1000.00", "500.00")
        .reserve("team-a/a", D("1200.00"), 1)
        .settle("team-a/a", D("1100.00"))
        .reserve("team-a/b", D("300.00"), 2)
    )
    assert used.spent == D("1100.00")
    assert used.owed == D("100.00")
    assert used.remaining == 0  # floored: the credit line is not included
    assert used.available == D("100.00")
    assert used.status_summary() == {
        "reserved": "300.00",
        "spent": "1100.00",
        "remaining": "0.00",
        "owed": "100.00",
        "activeJobs": 1,
        "activeGPUs": 2,
    }
    # The summary is what VoucherQuota.status accepts.
    VoucherQuotaStatus.model_validate(used.status_summary())


def test_terms_from_a_voucher():
    voucher = VoucherQuota.model_validate(
        {
            "metadata": {"name": "gpu-2026", "namespace": "team-a"},
            "spec": {
                "amount": 50000,
                "creditLine": "1000.50",
                "currency": "CNY",
                "validUntil": "2027-01-01T00:00:00Z",
                "limits": {"maxConcurrentGPUs": 64, "maxConcurrentJobs": 4},
            },
        }
    )
    fresh = empty_ledger(voucher)
    assert fresh.terms == VoucherTerms("team-a/gpu-2026", "CNY", D(50000), D("1000.50"), 64, 4)
    assert fresh.terms.ceiling == D("51000.50")
    lowered = fresh.with_terms(terms("10.00"))
    assert lowered.terms.amount == D("10.00")
    assert lowered.with_terms(lowered.terms) is lowered


# --- persistence --------------------------------------------------------------------------------


def test_to_dict_round_trip():
    state = (
        ledger()
        .reserve("team-a/a", D("3000.00"), 8, at=NOW)
        .reserve("team-a/b", D("10.00"), 1)
        .settle("team-a/b", D("12.00"))
        .reserve("team-a/c", D("1.00"), 1)
        .release("team-a/c")
    )
    data = state.to_dict()
    assert data == {
        "format": 1,
        "settled": "0.00",
        "entries": [
            {
                "job": "team-a/a",
                "state": "Reserved",
                "hold": "3000.00",
                "gpus": 8,
                "reservedAt": "2026-03-01T08:00:00Z",
            },
            {
                "job": "team-a/b",
                "state": "Charged",
                "hold": "10.00",
                "gpus": 1,
                "charged": "10.00",
                "metered": "12.00",
            },
            {"job": "team-a/c", "state": "Released", "hold": "1.00", "gpus": 1},
        ],
    }
    assert Ledger.from_dict(state.terms, data) == state
    assert Ledger.from_dict(state.terms, None) == ledger()


@pytest.mark.parametrize(
    "data",
    [
        {"format": 2, "entries": []},
        {"format": 1, "entries": [{"job": "a/b", "state": "Held", "hold": "1.00", "gpus": 1}]},
        {"format": 1, "entries": [{"job": "a/b", "state": "Reserved", "hold": 1.5, "gpus": 1}]},
        {"format": 1, "entries": [{"job": "a/b", "state": "Reserved", "gpus": 1}]},
        {"format": 1, "entries": [{"job": "a/b", "state": "Charged", "hold": "1", "gpus": 1}]},
        {
            "format": 1,
            "entries": [{"job": "a/b", "state": "Reserved", "hold": "1", "gpus": 1}] * 2,
        },
    ],
)
def test_from_dict_refuses_malformed_data(data: dict[str, Any]):
    with pytest.raises(ValueError):
        Ledger.from_dict(terms(), data)


# --- batch commit -------------------------------------------------------------------------------


def test_batch_decides_in_order_against_the_running_balance():
    start = ledger("1000.00").reserve("team-a/old", D("100.00"), 1)
    requests = [
        ReservationRequest("team-a/a", D("500.00"), 2, NOW),
        ReservationRequest("team-a/b", D("500.00"), 2, NOW),  # 100 + 500 + 500 > 1000
        ReservationRequest("team-a/c", D("400.00"), 2, NOW),  # fits exactly
        ReservationRequest("team-a/old", D("100.00"), 1, NOW),  # a repeat: admitted, no change
        ReservationRequest("team-a/a", D("1.00"), 2, NOW),  # conflicts with its own hold
    ]
    result = commit_batch(start, requests)
    assert [d.admitted for d in result.decisions] == [True, False, True, True, False]
    assert [d.reason for d in result.decisions] == [
        None,
        RefusalReason.INSUFFICIENT_BALANCE,
        None,
        None,
        RefusalReason.RESERVATION_CONFLICT,
    ]
    assert "short by 100.00 CNY" in result.decisions[1].message
    assert result.decisions[0].message == ""
    assert result.ledger.reserved == D("1000.00")
    assert result.changed
    assert [r.job for r in result.admitted] == ["team-a/a", "team-a/c", "team-a/old"]


def test_a_batch_of_repeats_needs_no_write():
    start = ledger().reserve("team-a/a", D("1.00"), 1)
    result = commit_batch(start, [ReservationRequest("team-a/a", D("1.00"), 1)])
    assert result.ledger is start
    assert not result.changed


# --- recount and rebuild ------------------------------------------------------------------------


def make_job(name: str, status: dict[str, Any] | None = None, **meta: Any) -> ComputeJob:
    return ComputeJob.model_validate(
        {
            "metadata": {"name": name, "namespace": "team-a", **meta},
            "spec": {
                "replicas": 2,
                "gpusPerReplica": 2,
                "maxRuntime": "1h",
                "template": {"spec": {"containers": [{"name": "main", "image": "x"}]}},
            },
            "status": status or {},
        }
    )


def held(reservation: str, **extra: Any) -> dict[str, Any]:
    return {"voucher": "gpu-2026", "reservation": reservation, "totalGPUs": 4, **extra}


def test_recount_releases_leaked_holds_after_the_grace_period():
    grace = timedelta(minutes=5)
    state = (
        ledger()
        .reserve("team-a/leaked", D("100.00"), 4, at=NOW - timedelta(minutes=6))
        .reserve("team-a/in-flight", D("100.00"), 4, at=NOW - timedelta(minutes=1))
        .reserve("team-a/undated", D("100.00"), 4)
        .reserve("team-a/alive", D("100.00"), 4, at=NOW - timedelta(hours=1))
    )
    result = recount(state, [make_job("alive")], now=NOW, grace=grace)
    assert result.released == ("team-a/leaked", "team-a/undated")
    assert set(result.ledger.entries) == {"team-a/in-flight", "team-a/alive"}
    assert result.ledger.reserved == D("200.00")
    assert result.changed


def test_recount_applies_what_job_statuses_prove():
    state = (
        ledger()
        .reserve("team-a/charged", D("100.00"), 4, at=NOW)
        .reserve("team-a/rejected", D("100.00"), 4, at=NOW)
        .reserve("team-a/running", D("100.00"), 4, at=NOW)
        .reserve("team-a/gone", D("50.00"), 4)
        .settle("team-a/gone", D("40.00"))
    )
    jobs = [
        make_job("charged", held("0.00", estimatedCost="100.00", chargedCost="70.00")),
        make_job("rejected", held("0.00", phase="Rejected")),
        make_job("running", held("100.00", phase="Running")),
        make_job("lost-hold", held("30.00", phase="Queued")),  # voucher status lost its hold
        make_job("elsewhere", {"voucher": "other", "reservation": "5.00"}),
        make_job("fresh"),  # no status yet: nothing to say
    ]
    result = recount(state, jobs, now=NOW, grace=timedelta(minutes=5))
    after = result.ledger
    assert result.settled == ("team-a/charged",)
    assert result.released == ("team-a/rejected",)
    assert result.restored == ("team-a/lost-hold",)
    # Gone, or ended as its status records: the tombstones are folded into `settled`.
    assert result.forgotten == ("team-a/charged", "team-a/gone", "team-a/rejected")
    assert set(after.entries) == {"team-a/running", "team-a/lost-hold"}
    assert after.settled == D("110.00")
    assert after.entries["team-a/lost-hold"].reserved_at == NOW
    assert after.spent == D("110.00")  # 40.00 folded + 70.00
    assert after.reserved == D("130.00")  # running + lost-hold
    # A second recount finds nothing to do.
    again = recount(after, jobs, now=NOW, grace=timedelta(minutes=5))
    assert not again.changed
    assert again.ledger is after


def test_rebuild_from_job_statuses():
    jobs = [
        make_job("charged", held("0.00", estimatedCost="100.00", chargedCost="70.00")),
        make_job("running", held("100.00", phase="Running")),
        make_job("rejected", held("0.00", phase="Rejected")),
        make_job("fresh"),
        make_job("other", {"voucher": "other", "reservation": "5.00"}),
    ]
    built = rebuild(terms(), jobs, settled=D("5.00"))
    assert {k: e.state for k, e in built.entries.items()} == {
        "team-a/charged": EntryState.CHARGED,
        "team-a/running": EntryState.RESERVED,
        "team-a/rejected": EntryState.RELEASED,
    }
    assert (built.spent, built.reserved, built.active_gpus) == (D("75.00"), D("100.00"), 4)
    assert entry_from_job(make_job("fresh"), "gpu-2026") is None


# --- properties ---------------------------------------------------------------------------------

JOBS = [f"team-a/job-{i}" for i in range(5)]
cents = st.integers(min_value=0, max_value=400_000).map(lambda c: Decimal(c).scaleb(-2))

operations = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.sampled_from(JOBS[:3]), cents, st.integers(0, 8)),
        st.tuples(st.just("settle"), st.sampled_from(JOBS[:3]), cents),
        st.tuples(st.just("release"), st.sampled_from(JOBS[:3])),
        st.tuples(st.just("forget"), st.sampled_from(JOBS[:3])),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    amount=cents,
    credit=cents,
    max_gpus=st.none() | st.integers(1, 16),
    max_jobs=st.none() | st.integers(1, 4),
    ops=operations,
)
def test_no_sequence_of_operations_breaks_the_invariants(amount, credit, max_gpus, max_jobs, ops):
    state = Ledger(VoucherTerms("team-a/v", "CNY", amount, credit, max_gpus, max_jobs))
    charges: list[Decimal] = []  # every charge the ledger accepted
    incarnation = dict.fromkeys(JOBS, 0)  # a key reused after forget is a new job
    charged_times: dict[tuple[str, int], int] = {}
    for op in ops:
        kind, job = op[0], op[1]
        before = state
        snapshot = before.to_dict()
        try:
            if kind == "reserve":
                fresh = job not in before.entries
                state = before.reserve(job, op[2], op[3])
                if fresh:
                    incarnation[job] += 1
            elif kind == "settle":
                state = before.settle(job, op[2])
                prior = before.entries[job]
                if prior.state is EntryState.RESERVED:
                    entry = state.entries[job]
                    assert entry.charged == min(op[2], prior.hold)
                    assert entry.capped == (op[2] > prior.hold)
                    charges.append(entry.charged)
                    key = (job, incarnation[job])
                    charged_times[key] = charged_times.get(key, 0) + 1
                else:
                    assert state is before  # already charged: nothing happens
            elif kind == "release":
                state = before.release(job)
            else:
                state = before.forget(job)
        except LedgerError:
            state = before
        assert before.to_dict() == snapshot  # operations never change their input

        assert state.reserved + state.spent <= state.terms.ceiling
        assert state.spent == sum(charges, Decimal(0))
        assert all(times <= 1 for times in charged_times.values())
        assert state.reserved == sum(
            (e.hold for e in state.entries.values() if e.state is EntryState.RESERVED),
            Decimal(0),
        )
        assert max_gpus is None or state.active_gpus <= max_gpus
        assert max_jobs is None or state.active_jobs <= max_jobs
        assert state.remaining >= 0 and state.owed >= 0
    assert Ledger.from_dict(state.terms, state.to_dict()) == state


@settings(max_examples=150, deadline=None)
@given(
    price=st.integers(min_value=1, max_value=1_000_000),
    affords=st.integers(min_value=0, max_value=12),
    spare=st.integers(min_value=0, max_value=999_999),
    extra=st.integers(min_value=0, max_value=12),
    credit_share=st.integers(min_value=0, max_value=100),
    repeats=st.lists(st.integers(min_value=0, max_value=23), max_size=6),
)
def test_a_batch_admits_exactly_what_the_voucher_affords(
    price, affords, spare, extra, credit_share, repeats
):
    """N requests of one price against a voucher affording K of them admit exactly min(N, K)."""
    requests_count = affords + extra
    ceiling = price * affords + spare % price  # cents: K jobs fit, K + 1 do not
    credit = ceiling * credit_share // 100
    terms_ = VoucherTerms(
        "team-a/v", "CNY", Decimal(ceiling - credit).scaleb(-2), Decimal(credit).scaleb(-2)
    )
    amount = Decimal(price).scaleb(-2)
    requests = [ReservationRequest(f"team-a/job-{i}", amount, 1) for i in range(requests_count)]
    # Retries of earlier requests (the same create sent again) must not take a second hold.
    for index in repeats:
        if index < len(requests):
            requests.append(requests[index])
    result = commit_batch(Ledger(terms_), requests)
    admitted = {d.request.job for d in result.decisions if d.admitted}
    assert len(admitted) == min(requests_count, affords)
    assert admitted == {f"team-a/job-{i}" for i in range(min(requests_count, affords))}
    assert result.ledger.active_jobs == len(admitted)
    assert result.ledger.reserved == amount * len(admitted)
    assert result.ledger.reserved <= terms_.ceiling
    for decision in result.decisions:
        if not decision.admitted:
            assert decision.reason is RefusalReason.INSUFFICIENT_BALANCE


@settings(max_examples=100, deadline=None)
@given(
    amount=cents,
    max_gpus=st.none() | st.integers(1, 16),
    requests=st.lists(
        st.builds(ReservationRequest, st.sampled_from(JOBS), cents, st.integers(0, 8)),
        max_size=12,
    ),
)
def test_a_batch_equals_reserving_one_by_one(amount, max_gpus, requests):
    start = Ledger(VoucherTerms("team-a/v", "CNY", amount, Decimal(0), max_gpus))
    result = commit_batch(start, requests)
    state = start
    for request, decision in zip(requests, result.decisions, strict=True):
        try:
            state = state.reserve(request.job, request.amount, request.gpus)
            assert decision.admitted
        except ReservationRefusedError as error:
            assert error.refusals == decision.refusals
    assert state == result.ledger


def test_recount_folds_the_tombstones_of_jobs_whose_status_records_the_end():
    state = (
        ledger()
        .reserve("team-a/done", D("100.00"), 4, at=NOW)
        .settle("team-a/done", D("60.00"))
        .reserve("team-a/closing", D("100.00"), 4, at=NOW)
        .settle("team-a/closing", D("20.00"))
    )
    jobs = [
        make_job("done", held("0.00", estimatedCost="100.00", chargedCost="60.00")),
        # Settled on the voucher, its own status not written yet: the tombstone must stay,
        # or a restarted operator would see a hold the voucher lacks and take it again.
        make_job("closing", held("100.00", phase="Running")),
    ]
    result = recount(state, jobs, now=NOW, grace=timedelta(minutes=5))
    assert result.forgotten == ("team-a/done",)
    assert set(result.ledger.entries) == {"team-a/closing"}
    assert result.ledger.spent == state.spent == D("80.00")
    assert not result.restored
