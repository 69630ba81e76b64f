"""The programme's counters: pool, caps and credit line exact under any order of requests;
splits that never pay more than the hold; rebuild from holds and records."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from suanli.vouchers.holds import ProgramQuote, QuotedHold, read_hold
from suanli.vouchers.programs import (
    RELATED_PARTY,
    ChargeSplit,
    HoldSplit,
    JobCharges,
    ProgramLedger,
    ProgramTerms,
    RestoredCharge,
    RestoredHold,
    program_share,
    restore,
    split_charge,
    split_hold,
)
from suanli.vouchers.refusals import RefusalReason

D = Decimal


def terms(pool: str = "100.00", credit: str = "50.00", cap: str = "60.00") -> ProgramTerms:
    return ProgramTerms("city", "CNY", D(pool), D(credit), {"half": D(cap)})


def test_the_share_is_rounded_down_so_parts_never_exceed_the_whole() -> None:
    assert program_share(D("10.01"), 50) == D("5.00")
    assert program_share(D("28.00"), 30) == D("8.40")
    assert split_hold(D("10.01"), 50, [True]) == HoldSplit(D("5.00"), D("5.01"))


def test_a_job_that_may_run_on_an_unsubsidised_center_holds_its_whole_worst_case_itself() -> None:
    assert split_hold(D("28.00"), 50, [True, False]) == HoldSplit(D("14.00"), D("28.00"))
    assert split_hold(D("28.00"), 50, [False]) == HoldSplit(D("0"), D("28.00"))


def test_a_related_party_charge_is_the_company_s_alone() -> None:
    split = split_charge(D("9.99"), 100, JobCharges(left=D("28.00")), RELATED_PARTY)
    assert split == ChargeSplit(D("0"), D("9.99"), RELATED_PARTY)


def test_each_limit_refuses_with_its_own_reason() -> None:
    ledger = ProgramLedger(terms(pool="20.00", credit="5.00", cap="10.00"))
    reasons = {r.reason for r in ledger.check("u1", "acme", "half", HoldSplit(D("25"), D("6")))}
    assert reasons == {
        RefusalReason.PROGRAM_POOL_EXHAUSTED,
        RefusalReason.COMPANY_CAP_EXCEEDED,
        RefusalReason.CREDIT_LINE_EXCEEDED,
    }


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 3000), st.integers(0, 3000)),
        max_size=60,
    )
)
def test_no_order_of_requests_commits_past_the_pool_a_cap_or_a_credit_line(
    requests: list[tuple[str, int, int]],
) -> None:
    ledger = ProgramLedger(terms())
    for index, (company, share, own) in enumerate(requests):
        split = HoldSplit(D(share) / 100, D(own) / 100)
        if not ledger.check(f"uid-{index}", company, "half", split):
            ledger.hold(f"uid-{index}", company, "half", split)
        assert ledger.committed <= D("100.00")
        for totals in ledger.companies().values():
            assert totals.subsidy_committed <= D("60.00")
            assert totals.own_committed <= D("50.00")


def test_charges_move_from_hold_to_spent_once_per_record_and_release_frees_the_rest() -> None:
    ledger = ProgramLedger(terms())
    ledger.hold("u1", "acme", "half", HoldSplit(D("14.00"), D("14.00")))
    split = split_charge(D("10.00"), 50, ledger.earlier_charges("u1"), None)
    assert ledger.charge("rec-1", "u1", "acme", "half", split)
    assert not ledger.charge("rec-1", "u1", "acme", "half", split)
    assert (ledger.spent, ledger.held, ledger.owed) == (D("5.00"), D("9.00"), D("5.00"))
    ledger.release("u1")
    assert (ledger.committed, ledger.left) == (D("5.00"), D("95.00"))


def test_a_rebuild_from_holds_and_records_gives_the_same_counters() -> None:
    live = ProgramLedger(terms())
    live.hold("u1", "acme", "half", HoldSplit(D("14.00"), D("14.00")))
    live.hold("u2", "bolt", "half", HoldSplit(D("7.00"), D("7.00")))
    split = ChargeSplit(D("3.00"), D("3.00"))
    live.charge("rec-1", "u1", "acme", "half", split)
    rebuilt = restore(
        terms(),
        [
            RestoredHold("u1", "acme", "half", HoldSplit(D("14.00"), D("14.00"))),
            RestoredHold("u2", "bolt", "half", HoldSplit(D("7.00"), D("7.00"))),
        ],
        [RestoredCharge("rec-1", "u1", "acme", "half", split)],
    )
    assert (rebuilt.held, rebuilt.spent, rebuilt.owed) == (live.held, live.spent, live.owed)
    assert rebuilt.companies() == live.companies()


def test_hold_annotations_carry_the_programme_part_and_old_ones_still_parse() -> None:
    old = '{"amount":"28.00","gpus":1,"voucher":"budget"}'
    assert read_hold({"suanli.io/hold": old}) == QuotedHold("budget", D("28.00"), 1)
    part = ProgramQuote("city", "acme", "half", D("14.00"), D("14.00"))
    hold = QuotedHold("program-city", D("28.00"), 1, part)
    assert read_hold({"suanli.io/hold": hold.annotation()}) == hold


def test_a_retried_admission_of_a_job_that_holds_is_not_judged_again() -> None:
    ledger = ProgramLedger(terms(pool="20.00", credit="50.00", cap="20.00"))
    split = HoldSplit(D("20.00"), D("0"))
    assert not ledger.check("u1", "acme", "half", split)
    ledger.hold("u1", "acme", "half", split)
    assert not ledger.check("u1", "acme", "half", split)  # its own hold is not counted twice
    assert ledger.check("u2", "acme", "half", split)  # another job's is


def _charge_attempts(
    ledger: ProgramLedger, uid: str, percent: int, amounts: list[Decimal], subsidised: list[bool]
) -> None:
    for number, (amount, here) in enumerate(zip(amounts, subsidised, strict=True), start=1):
        reason = None if here else RELATED_PARTY
        split = split_charge(amount, percent, ledger.earlier_charges(uid), reason)
        assert split.program + split.company == amount
        ledger.charge(f"{uid}-a{number}", uid, "acme", "half", split)


@given(
    worst=st.integers(1, 100_000),
    percent=st.integers(0, 100),
    cuts=st.lists(st.integers(0, 100_000), min_size=1, max_size=16),
)
def test_a_job_s_attempts_are_split_as_one_charge_so_neither_part_passes_its_hold(
    worst: int, percent: int, cuts: list[int]
) -> None:
    """Attempts that together cost at most the worst case: the programme pays exactly its share
    of their sum, and the company never owes more than its part of the hold (its credit
    line), however the attempts round."""
    total = D(worst) / 100
    points = sorted({min(c, worst) for c in cuts} | {worst})
    amounts = [D(b - a) / 100 for a, b in zip([0, *points], points, strict=False) if b > a]
    ledger = ProgramLedger(terms(pool="1000.00", credit="1000.00", cap="1000.00"))
    hold = split_hold(total, percent, [True])
    ledger.hold("u1", "acme", "half", hold)
    _charge_attempts(ledger, "u1", percent, amounts, [True] * len(amounts))
    totals = ledger.companies()["acme"]
    assert totals.subsidy_spent == program_share(total, percent) == hold.program
    assert totals.own_spent == hold.company
    assert (ledger.held, totals.own_held) == (D("0"), D("0"))


@given(
    worst=st.integers(1, 100_000),
    percent=st.integers(0, 100),
    attempts=st.lists(st.tuples(st.integers(0, 30_000), st.booleans()), min_size=1, max_size=16),
)
def test_attempts_on_subsidised_and_related_party_centers_stay_within_the_hold(
    worst: int, percent: int, attempts: list[tuple[int, bool]]
) -> None:
    total = D(worst) / 100
    amounts, flags, charged = [], [], 0
    for asked, here in attempts:  # the voucher never charges more than the hold
        cents = min(asked, worst - charged)
        charged += cents
        amounts.append(D(cents) / 100)
        flags.append(here)
    ledger = ProgramLedger(terms(pool="1000.00", credit="1000.00", cap="1000.00"))
    hold = split_hold(total, percent, [True, False])  # it may run on either
    ledger.hold("u1", "acme", "half", hold)
    _charge_attempts(ledger, "u1", percent, amounts, flags)
    totals = ledger.companies()["acme"]
    assert totals.subsidy_spent <= hold.program
    assert totals.own_spent <= hold.company
    subsidised = sum((a for a, here in zip(amounts, flags, strict=True) if here), D(0))
    assert totals.subsidy_spent == min(program_share(subsidised, percent), hold.program)
