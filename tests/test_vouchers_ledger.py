"""The billing state machine: reserve, charge per attempt, close, fold, batch, recount, storage.

Entries are keyed by the ComputeJob's uid. The property tests at the end drive the ledger with
arbitrary sequences of operations (repeats and invalid ones included) and check what the design
promises: ``reserved + spent`` never passes ``amount + creditLine``, a uid's attempt is charged
at most once, and a batch of N requests against a voucher that affords K admits exactly K.
The whole life of a charge, with crashes, is in test_billing_properties.py.
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
from suanli.vouchers.recount import RecordedCharge, entry_from_job, rebuild, recount
from suanli.vouchers.refusals import RefusalReason

NOW = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
D = Decimal


def terms(amount: str = "10000.00", credit: str = "0.00", **caps: int | None) -> VoucherTerms:
    return VoucherTerms("team-a/gpu-2026", "CNY", D(amount), D(credit), **caps)  # type: ignore[arg-type]


def ledger(amount: str = "10000.00", credit: str = "0.00", **caps: int | None) -> Ledger:
    return Ledger(terms(amount, credit, **caps))


def req(uid: str, amount: str, gpus: int = 4, at: datetime | None = None) -> ReservationRequest:
    return ReservationRequest(uid, f"team-a/{uid}", D(amount), gpus, at)


# --- reserve ------------------------------------------------------------------------------------


def test_reserve_holds_money_and_gpus():
    state = ledger().reserve(req("u1", "3200.00", 8, NOW))
    entry = state.entries["u1"]
    assert (entry.state, entry.hold, entry.gpus, entry.job) == (
        EntryState.RESERVED,
        D("3200.00"),
        8,
        "team-a/u1",
    )
    assert (state.reserved, state.spent, state.available) == (D("3200.00"), 0, D("6800.00"))
    assert (state.active_jobs, state.active_gpus) == (1, 8)


def test_reserve_is_idempotent_per_uid_and_a_new_uid_of_the_same_name_is_another_job():
    state = ledger().reserve(req("u1", "100.00"))
    assert state.reserve(req("u1", "100.00")) is state
    again = state.reserve(ReservationRequest("u2", "team-a/u1", D("100.00"), 4))
    assert set(again.entries) == {"u1", "u2"}
    with pytest.raises(ReservationRefusedError) as refused:
        state.reserve(req("u1", "200.00"))
    assert refused.value.reason is RefusalReason.RESERVATION_CONFLICT


def test_reserve_refuses_over_the_ceiling_exactly():
    state = ledger("100.00", "50.00").reserve(req("a", "150.00"))
    assert state.available == 0
    with pytest.raises(ReservationRefusedError) as refused:
        state.reserve(req("b", "0.01"))
    assert refused.value.reason is RefusalReason.INSUFFICIENT_BALANCE
    assert "short by 0.01 CNY" in str(refused.value)


def test_reserve_enforces_the_concurrency_caps_and_the_ledger_size():
    state = ledger(max_concurrent_gpus=8, max_concurrent_jobs=2).reserve(req("a", "1.00", 6))
    with pytest.raises(ReservationRefusedError) as refused:
        state.reserve(req("b", "1.00", 4))
    assert refused.value.reason is RefusalReason.CONCURRENT_GPUS_EXCEEDED
    small = Ledger(VoucherTerms("team-a/v", "CNY", D("100.00"), max_entries=2))
    full = small.reserve(req("a", "1.00")).reserve(req("b", "1.00")).close("b")
    with pytest.raises(ReservationRefusedError) as refused:
        full.reserve(req("c", "1.00"))
    assert refused.value.reason is RefusalReason.LEDGER_FULL
    assert "status.ledger" in {r.limit for r in refused.value.refusals}
    # Folding the tombstone makes room again.
    assert "c" in full.fold("b").reserve(req("c", "1.00")).entries


def test_reserve_refuses_a_closed_uid_and_bad_inputs():
    state = ledger().reserve(req("a", "10.00")).close("a")
    with pytest.raises(ReservationRefusedError) as refused:
        state.reserve(req("a", "10.00"))
    assert refused.value.reason is RefusalReason.JOB_CLOSED
    with pytest.raises(ValueError, match="two decimal"):
        ledger().reserve(req("b", "1.005"))
    with pytest.raises(ValueError, match="negative"):
        ledger().reserve(req("b", "1.00", -1))


# --- charge, close, fold ------------------------------------------------------------------------


def test_attempts_move_money_from_the_hold_to_spent_each_once():
    state = ledger().reserve(req("a", "100.00")).charge("a", 1, D("30.00"))
    assert (state.reserved, state.spent) == (D("70.00"), D("30.00"))
    assert state.charge("a", 1, D("99.00")) is state  # the first charge of an attempt is final
    state = state.charge("a", 2, D("20.00"))
    entry = state.entries["a"]
    assert (entry.charged, entry.attempts, entry.is_active) == (D("50.00"), {1, 2}, True)
    closed = state.close("a")
    assert closed.entries["a"].state is EntryState.CHARGED
    assert (closed.reserved, closed.spent, closed.active_jobs) == (0, D("50.00"), 0)
    assert closed.close("a") is closed
    # A late delivery of an attempt already charged is a no-op even after the close...
    assert closed.charge("a", 2, D("20.00")) is closed
    # ...and one the ledger never saw is refused: the hold is gone.
    with pytest.raises(NotReservedError):
        closed.charge("a", 3, D("1.00"))


def test_a_charge_above_what_is_left_of_the_hold_is_refused():
    state = ledger().reserve(req("a", "100.00")).charge("a", 1, D("80.00"))
    with pytest.raises(NotReservedError, match=r"only 20\.00"):
        state.charge("a", 2, D("20.01"))
    capped = state.charge("a", 2, D("20.00"), metered=D("55.00"))
    assert capped.entries["a"].metered == D("135.00")
    assert capped.entries["a"].capped


def test_charge_refuses_unknown_uids_and_close_ignores_them():
    with pytest.raises(NotReservedError):
        ledger().charge("nobody", 1, D("1.00"))
    state = ledger()
    assert state.close("nobody") is state


def test_closing_without_a_charge_releases_and_folding_keeps_spent():
    state = ledger().reserve(req("a", "10.00")).reserve(req("b", "10.00")).charge("b", 1, D("4"))
    state = state.close("a").close("b")
    assert state.entries["a"].state is EntryState.RELEASED
    assert state.fold("a").fold("b").spent == state.spent == D("4.00")
    assert state.fold("a").fold("b").settled == D("4.00")
    assert state.fold("a").fold("b").entries == {}
    # A hold is never folded: it would vanish unreleased.
    held = ledger().reserve(req("c", "5.00"))
    assert held.fold("c") is held


def test_balances_with_a_credit_line():
    state = ledger("100.00", "50.00").reserve(req("a", "120.00")).charge("a", 1, D("110.00"))
    state = state.close("a")
    assert (state.spent, state.remaining, state.owed, state.available) == (
        D("110.00"),
        0,
        D("10.00"),
        D("40.00"),
    )


def test_terms_from_a_voucher():
    voucher = VoucherQuota.model_validate(
        {
            "metadata": {"name": "v", "namespace": "team-a"},
            "spec": {
                "amount": "500.00",
                "creditLine": "100.00",
                "validUntil": "2027-01-01T00:00:00Z",
                "limits": {"maxConcurrentGPUs": 16, "maxConcurrentJobs": 3},
            },
        }
    )
    assert empty_ledger(voucher).terms == VoucherTerms(
        "team-a/v", "CNY", D("500.00"), D("100.00"), 16, 3
    )


# --- persistence --------------------------------------------------------------------------------


def test_to_dict_round_trip_and_schema():
    state = (
        ledger()
        .reserve(req("b", "20.00", 2, NOW))
        .reserve(req("a", "10.00", 1))
        .charge("a", 1, D("10.00"), metered=D("12.00"))
        .close("a")
    )
    data = state.to_dict()
    assert data["format"] == 2
    assert [e["uid"] for e in data["entries"]] == ["a", "b"]
    assert data["entries"][0] == {
        "uid": "a",
        "job": "team-a/a",
        "state": "Charged",
        "hold": "10.00",
        "gpus": 1,
        "charged": "10.00",
        "attempts": [1],
        "metered": "12.00",
    }
    assert Ledger.from_dict(state.terms, data) == state
    # The voucher's status schema accepts what the ledger writes.
    VoucherQuotaStatus.model_validate({"ledger": data})


def test_a_format_1_ledger_is_read_under_name_keys_and_rekeyed_by_the_recount():
    legacy = {
        "format": 1,
        "settled": "5.00",
        "entries": [
            {"job": "team-a/train", "state": "Reserved", "hold": "40.00", "gpus": 4},
            {"job": "team-a/done", "state": "Charged", "hold": "9.00", "gpus": 1, "charged": "7"},
        ],
    }
    state = Ledger.from_dict(terms(), legacy)
    assert set(state.entries) == {"team-a/train", "team-a/done"}
    assert state.spent == D("12.00")
    result = recount(
        state, [make_job("train", held("40.00"), uid="uid-train")], now=NOW, grace=GRACE
    )
    assert result.rekeyed == ("uid-train",)
    assert set(result.ledger.entries) == {"uid-train"}
    assert result.ledger.spent == D("12.00")  # the folded tombstone keeps its charge


@pytest.mark.parametrize(
    "data",
    [
        {"format": 3, "entries": []},
        {"format": 2, "entries": [{"uid": "a", "job": "x/y", "state": "Nope", "hold": "1"}]},
        {"format": 2, "entries": [{"uid": "a", "job": "x/y", "state": "Reserved", "hold": "1"}]},
        {
            "format": 2,
            "entries": [
                {"uid": "a", "job": "x/y", "state": "Reserved", "hold": "1.00", "gpus": 1},
                {"uid": "a", "job": "x/z", "state": "Reserved", "hold": "1.00", "gpus": 1},
            ],
        },
        {
            "format": 2,
            "entries": [
                {
                    "uid": "a",
                    "job": "x/y",
                    "state": "Charged",
                    "hold": "1.00",
                    "gpus": 1,
                    "charged": "2.00",
                },
            ],
        },
    ],
)
def test_from_dict_refuses_malformed_data(data: dict[str, Any]):
    with pytest.raises(ValueError):
        Ledger.from_dict(terms(), data)


# --- batches ------------------------------------------------------------------------------------


def test_requests_are_decided_in_order_against_the_running_balance():
    start = ledger("100.00")
    new, refusals = start.reserve_many([req("a", "60.00"), req("b", "60.00"), req("c", "40.00")])
    assert [not r for r in refusals] == [True, False, True]
    assert refusals[1][0].reason is RefusalReason.INSUFFICIENT_BALANCE
    assert new.reserved == D("100.00") and new is not start


def test_repeats_of_held_requests_change_nothing():
    state = ledger().reserve(req("a", "10.00"))
    new, refusals = state.reserve_many([req("a", "10.00")])
    assert refusals == ((),) and new is state


# --- recount ------------------------------------------------------------------------------------

GRACE = timedelta(minutes=5)


def make_job(name: str, status: dict[str, Any] | None = None, uid: str | None = None):
    return ComputeJob.model_validate(
        {
            "metadata": {
                "name": name,
                "namespace": "team-a",
                "uid": uid or name,
                "creationTimestamp": "2026-03-01T07:00:00Z",
            },
            "spec": {
                "gpusPerReplica": 4,
                "maxRuntime": "1h",
                "template": {"spec": {"containers": [{"name": "main", "image": "x"}]}},
            },
            "status": status or {},
        }
    )


def held(reservation: str, **extra: Any) -> dict[str, Any]:
    return {"voucher": "gpu-2026", "reservation": reservation, "totalGPUs": 4, **extra}


def record(uid: str, attempt: int, amount: str, voucher: str = "gpu-2026") -> RecordedCharge:
    return RecordedCharge(uid, attempt, D(amount), D(amount), voucher)


def test_recount_closes_leaked_holds_after_the_grace_period():
    state = (
        ledger()
        .reserve(req("leaked", "100.00", 4, NOW - timedelta(minutes=6)))
        .reserve(req("in-flight", "100.00", 4, NOW - timedelta(minutes=1)))
        .reserve(req("undated", "100.00", 4))
        .reserve(req("alive", "100.00", 4, NOW - timedelta(hours=1)))
    )
    result = recount(state, [make_job("alive")], now=NOW, grace=GRACE)
    assert result.released == ("leaked", "undated")
    assert set(result.ledger.entries) == {"in-flight", "alive"}
    assert result.ledger.reserved == D("200.00")
    assert result.changed


def test_a_refused_recreate_of_a_finished_job_leaves_spent_alone():
    # The job ran and was charged; its tombstone was folded. Three creates of the same file
    # are each admitted (new uid), then refused by the API server as AlreadyExists.
    done = make_job("train", held("0.00", estimatedCost="100.00", chargedCost="0.08"), uid="u1")
    state = ledger().reserve(req("u1", "100.00")).charge("u1", 1, D("0.08")).close("u1")
    records = [record("u1", 1, "0.08")]
    state = recount(state, [done], records, now=NOW, grace=GRACE).ledger
    assert state.entries == {} and state.spent == D("0.08")
    for uid in ("r1", "r2", "r3"):
        state = state.reserve(ReservationRequest(uid, "team-a/train", D("100.00"), 4, NOW))
    later = NOW + GRACE
    state = recount(state, [done], records, now=later, grace=GRACE).ledger
    assert (state.spent, state.reserved, state.entries) == (D("0.08"), 0, {})


def test_recount_applies_what_records_and_statuses_prove():
    state = (
        ledger()
        .reserve(req("charged", "100.00", 4, NOW))  # record made, voucher write lost
        .reserve(req("rejected", "100.00", 4, NOW))
        .reserve(req("running", "100.00", 4, NOW))
        .reserve(req("gone", "50.00"))
        .charge("gone", 1, D("40.00"))
        .close("gone")
    )
    jobs = [
        make_job("charged", held("0.00", estimatedCost="100.00", chargedCost="70.00")),
        make_job("rejected", held("0.00", phase="Rejected")),
        make_job("running", held("100.00", phase="Running")),
        make_job("lost-hold", held("30.00", phase="Queued")),  # voucher status lost its hold
        make_job("elsewhere", {"voucher": "other", "reservation": "5.00"}),
        make_job("fresh"),  # no status yet: nothing to say
    ]
    records = [
        record("charged", 1, "70.00"),
        record("gone", 1, "40.00"),
        record("running", 1, "10.00"),  # a first attempt, lost to a member's failure
        record("elsewhere", 1, "5.00", voucher="other"),
    ]
    result = recount(state, jobs, records, now=NOW, grace=GRACE)
    after = result.ledger
    assert result.charged == ("charged", "running")
    assert result.released == ("charged", "rejected")
    assert result.restored == ("lost-hold",)
    assert result.forgotten == ("charged", "gone", "rejected")
    assert set(after.entries) == {"running", "lost-hold"}
    assert after.settled == D("110.00")
    assert after.entries["lost-hold"].reserved_at == NOW
    assert after.spent == D("120.00")  # 40.00 + 70.00 folded, 10.00 on the running job
    assert after.reserved == D("120.00")  # running (90.00 left) + lost-hold
    again = recount(after, jobs, records, now=NOW, grace=GRACE)
    assert not again.changed
    assert again.ledger is after


def test_rebuild_from_job_statuses_and_records():
    jobs = [
        make_job("charged", held("0.00", estimatedCost="100.00", chargedCost="70.00")),
        make_job("running", held("100.00", phase="Running")),
        make_job("rejected", held("0.00", phase="Rejected")),
        make_job("fresh"),
        make_job("other", {"voucher": "other", "reservation": "5.00"}),
    ]
    built = rebuild(terms(), jobs, [record("charged", 1, "70.00")], settled=D("5.00"))
    assert {k: e.state for k, e in built.entries.items()} == {
        "charged": EntryState.CHARGED,
        "running": EntryState.RESERVED,
        "rejected": EntryState.RELEASED,
    }
    assert (built.spent, built.reserved, built.active_gpus) == (D("75.00"), D("100.00"), 4)
    assert entry_from_job(make_job("fresh"), "gpu-2026") is None


# --- properties ---------------------------------------------------------------------------------

UIDS = [f"uid-{i}" for i in range(3)]
cents = st.integers(min_value=0, max_value=400_000).map(lambda c: Decimal(c).scaleb(-2))

operations = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.sampled_from(UIDS), cents, st.integers(0, 8)),
        st.tuples(st.just("charge"), st.sampled_from(UIDS), st.integers(1, 3), cents),
        st.tuples(st.just("close"), st.sampled_from(UIDS)),
        st.tuples(st.just("fold"), st.sampled_from(UIDS)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    amount=cents,
    credit=cents,
    max_gpus=st.none() | st.integers(1, 16),
    max_jobs=st.none() | st.integers(1, 3),
    ops=operations,
)
def test_no_sequence_of_operations_breaks_the_invariants(amount, credit, max_gpus, max_jobs, ops):
    state = Ledger(VoucherTerms("team-a/v", "CNY", amount, credit, max_gpus, max_jobs))
    charges: dict[tuple[str, int], Decimal] = {}
    for op in ops:
        before = state
        try:
            if op[0] == "reserve":
                state = state.reserve(ReservationRequest(op[1], f"team-a/{op[1]}", op[2], op[3]))
            elif op[0] == "charge":
                state = state.charge(op[1], op[2], op[3])
                if state is not before:
                    assert (op[1], op[2]) not in charges, "an attempt was charged twice"
                    charges[(op[1], op[2])] = op[3]
            elif op[0] == "close":
                state = state.close(op[1])
            else:
                state = state.fold(op[1])
        except LedgerError:
            assert state is before  # a refused operation changes nothing
        assert state.committed <= state.terms.ceiling
        assert state.spent == sum(charges.values(), Decimal(0))
        assert state.reserved >= 0
        for entry in state.entries.values():
            assert entry.charged <= entry.hold
        assert Ledger.from_dict(state.terms, state.to_dict()) == state


@settings(max_examples=100, deadline=None)
@given(
    amount=st.integers(0, 20).map(lambda n: Decimal(n * 100)),
    requests=st.integers(1, 30),
)
def test_requests_admit_exactly_what_the_voucher_affords(amount, requests):
    _, refusals = Ledger(VoucherTerms("team-a/v", "CNY", amount)).reserve_many(
        [req(f"u{i}", "100.00") for i in range(requests)]
    )
    assert sum(1 for r in refusals if not r) == min(requests, int(amount // 100))


@given(
    st.lists(
        st.lists(
            st.tuples(st.integers(0, 30), st.integers(1, 5000), st.integers(0, 8)), max_size=5
        ),
        max_size=12,
    ),
    st.lists(st.integers(0, 30), max_size=6),
)
def test_a_ledger_made_by_a_hold_knows_the_balances_its_entries_sum_to(
    batches: list[list[tuple[int, int, int]]], closes: list[int]
) -> None:
    """Admission's ledgers carry their balances from the one before instead of summing every
    entry again; they are exactly what summing gives, however holds and closes interleave."""
    current = ledger("20000.00", "500.00", max_concurrent_jobs=20, max_concurrent_gpus=60)
    for index, batch in enumerate(batches):
        requests = [req(f"u{uid}", f"{cents / 100:.2f}", gpus) for uid, cents, gpus in batch]
        current, _ = current.reserve_many(requests)
        if index < len(closes) and f"u{closes[index]}" in current.entries:
            current = current.close(f"u{closes[index]}")
        summed = Ledger(current.terms, dict(current.entries), current.settled)
        assert (current.reserved, current.spent) == (summed.reserved, summed.spent)
        assert (current.active_jobs, current.active_gpus) == (
            summed.active_jobs,
            summed.active_gpus,
        )
