"""The admission decision, without Kopf or a cluster: every allow and every refusal of a new
ComputeJob, from the request and the in-memory state alone, and what each leaves behind (a
hold taken, or none)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from suanli.admission.decide import (
    AdmissionRequest,
    AdmissionState,
    Admitted,
    Denied,
    decide,
)
from suanli.admission.gate import AdmissionGate
from suanli.api.computejob import ComputeJob
from suanli.api.membercluster import MemberCluster
from suanli.api.names import HOLD_ANNOTATION
from suanli.api.voucherprogram import VoucherProgram
from suanli.api.voucherquota import VoucherQuota
from suanli.vouchers.book import VoucherBook
from suanli.vouchers.holds import ProgramQuote, QuotedHold
from suanli.vouchers.ledger import Ledger, VoucherTerms
from suanli.vouchers.limits import Allowed, quote
from suanli.vouchers.pricing import Installed, PriceOffer, offers_from_members
from suanli.vouchers.programs import ProgramBook, ProgramLedger, ProgramTerms

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
KEY = ("team-a", "budget")
D = Decimal

MEMBERS = [
    MemberCluster.model_validate(
        {
            "metadata": {"name": "member-a"},
            "spec": {
                "region": "shanghai",
                "kubeconfigSecretRef": {"name": "k", "namespace": "suanli-system"},
                "prices": [{"gpuModel": "H100", "pricePerGPUHour": "10.00"}],
            },
        }
    )
]
OFFERS = offers_from_members(MEMBERS)
CITY = VoucherProgram.model_validate(
    {
        "metadata": {"name": "city", "uid": "uid-city"},
        "spec": {
            "period": {"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"},
            "pool": "1000.00",
            "rules": [{"name": "city-50", "sharePercent": 50, "companyCap": "500.00"}],
        },
    }
)


def voucher(amount: str = "100.00", program: bool = False) -> VoucherQuota:
    spec: dict[str, Any] = {"amount": amount, "validUntil": "2027-01-01T00:00:00Z"}
    if program:
        spec["program"] = {
            "name": "city",
            "company": "acme",
            "rule": "city-50",
            "sharePercent": 50,
        }
    return VoucherQuota.model_validate(
        {"metadata": {"name": KEY[1], "namespace": KEY[0]}, "spec": spec}
    )


def job(uid: str = "uid-1", gpus: int = 2, hold: str | None = None) -> ComputeJob:
    """A job of ``gpus`` H100 for an hour; ``hold``: its annotation (None: none at all)."""
    annotations = {HOLD_ANNOTATION: hold} if hold is not None else {}
    return ComputeJob.model_validate(
        {
            "metadata": {
                "name": uid,
                "namespace": KEY[0],
                "uid": uid,
                "annotations": annotations,
            },
            "spec": {
                "gpusPerReplica": gpus,
                "maxRuntime": "1h",
                "voucherRef": {"name": KEY[1]},
                "template": {"spec": {"containers": [{"name": "main", "image": "x"}]}},
            },
        }
    )


def quoted(unquoted: ComputeJob, on: VoucherQuota, program: ProgramQuote | None) -> str:
    """The hold annotation the mutating step would give the job."""
    priced = quote(unquoted, on, OFFERS, NOW)
    assert isinstance(priced, Allowed)
    request = priced.request
    return QuotedHold(KEY[1], request.amount, request.gpus, program).annotation()


@dataclass
class World:
    """The leader's memory, as a test sets it up."""

    voucher: VoucherQuota = field(default_factory=voucher)
    gate: AdmissionGate = field(default_factory=lambda: AdmissionGate(is_open=True))
    book: VoucherBook = field(default_factory=VoucherBook)
    programs: ProgramBook = field(default_factory=ProgramBook)
    loaded: bool = True
    offers: list[PriceOffer] = field(default_factory=lambda: list(OFFERS))

    def __post_init__(self) -> None:
        if self.loaded:
            self.book.load(KEY, Ledger(VoucherTerms.from_voucher(self.voucher)))

    @property
    def state(self) -> AdmissionState:
        return AdmissionState(self.gate, self.book, self.programs, {"city": CITY})

    def request(self, submitted: ComputeJob, dry_run: bool = False) -> AdmissionRequest:
        return AdmissionRequest(
            job=submitted,
            voucher=self.voucher,
            offers=self.offers,
            members=MEMBERS,
            now=NOW,
            deadline=NOW + timedelta(seconds=10),
            dry_run=dry_run,
        )

    @property
    def reserved(self) -> Decimal:
        ledger = self.book.ledger(KEY)
        assert ledger is not None
        return ledger.reserved


def a_job_as_quoted(world: World, uid: str = "uid-1", gpus: int = 2) -> ComputeJob:
    program = None
    if world.voucher.spec.program is not None:
        # Half of the worst case (2 GPUs x 1 h x 10.00 = 20.00) is the programme's.
        program = ProgramQuote("city", "acme", "city-50", D("10.00"), D("10.00"))
    return job(uid, gpus, hold=quoted(job(uid, gpus), world.voucher, program))


# --- refusals -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    id: str
    world: Callable[[], World]
    submitted: Callable[[World], ComputeJob]
    reason: str
    says: str
    code: int = 403
    on_voucher: bool = False


def _closed() -> World:
    world = World()
    world.gate.close("this replica does not lead")
    return world


def _spent() -> World:
    world = World(voucher=voucher("15.00"))  # the job's worst case is 20.00
    return world


def _unloaded_programme() -> World:
    return World(voucher=voucher(program=True))  # the programme's counters are not loaded


def _exhausted_programme() -> World:
    world = World(voucher=voucher(program=True))
    world.programs.install(
        ProgramLedger(ProgramTerms("city", "CNY", D("5.00"), D("100.00"), {"city-50": D("500.00")}))
    )
    return world


REFUSALS = [
    Refusal(
        "replica does not lead",
        _closed,
        a_job_as_quoted,
        "NotLeader",
        "this replica does not lead; retry in a few seconds",
        code=503,
    ),
    Refusal(
        "ledger not loaded yet",
        lambda: World(loaded=False),
        a_job_as_quoted,
        "NotLeader",
        "retry in a few seconds",
        code=503,
    ),
    Refusal(
        "voucher cannot pay the worst case",
        _spent,
        a_job_as_quoted,
        "InsufficientBalance",
        "20.00",
        on_voucher=True,
    ),
    Refusal(
        "a gang no member can ever fit",
        lambda: World(offers=[replace(o, installed=Installed(((8, 4),))) for o in OFFERS]),
        lambda world: job(gpus=9),
        "NeverFits",
        "spec.gpusPerReplica: 1 replica(s) of 9 devices fit on no member",
        on_voucher=True,
    ),
    Refusal(
        "programme not loaded",
        _unloaded_programme,
        a_job_as_quoted,
        "ProgramPoolExhausted",
        "programme city is not loaded yet",
        on_voucher=True,
    ),
    Refusal(
        "programme pool exhausted",
        _exhausted_programme,
        a_job_as_quoted,
        "ProgramPoolExhausted",
        "city",
        on_voucher=True,
    ),
    Refusal(
        "no hold annotation",
        World,
        lambda world: job(),
        "QuoteChanged",
        f"metadata.annotations[{HOLD_ANNOTATION}]",
        code=409,
    ),
    Refusal(
        "a hold quoted for fewer GPUs",
        World,
        lambda world: job(gpus=4, hold=quoted(job(gpus=2), world.voucher, None)),
        "QuoteChanged",
        "the price or the voucher changed",
        code=409,
    ),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[case.id for case in REFUSALS])
def test_each_refusal_names_its_reason_and_takes_no_hold(case: Refusal) -> None:
    world = case.world()
    decision = decide(world.request(case.submitted(world)), world.state)
    assert isinstance(decision, Denied), decision
    assert (decision.reason, decision.code, decision.on_voucher) == (
        case.reason,
        case.code,
        case.on_voucher,
    )
    assert case.says in decision.message
    if world.loaded:
        assert world.reserved == 0
    assert world.programs.ledger("city") is None or world.programs.ledger("city").held == 0  # type: ignore[union-attr]


# --- admissions -----------------------------------------------------------------------------------


def test_a_covered_job_carrying_its_quote_is_admitted_and_its_hold_taken_at_once() -> None:
    world = World()
    decision = decide(world.request(a_job_as_quoted(world)), world.state)
    assert isinstance(decision, Admitted) and not decision.dry_run
    assert decision.hold == QuotedHold(KEY[1], D("20.00"), 2, None)
    assert world.reserved == D("20.00")
    assert world.book.is_pending("uid-1")  # until the job is seen stored


def test_a_programme_job_holds_its_part_on_the_programme_too() -> None:
    world = World(voucher=voucher(program=True))
    world.programs.install(
        ProgramLedger(
            ProgramTerms("city", "CNY", D("1000.00"), D("100.00"), {"city-50": D("500.00")})
        )
    )
    decision = decide(world.request(a_job_as_quoted(world)), world.state)
    assert isinstance(decision, Admitted)
    assert decision.hold.program is not None and decision.hold.program.program == D("10.00")
    assert world.programs.ledger("city").held == D("10.00")  # type: ignore[union-attr]


def test_a_dry_run_is_judged_and_priced_but_holds_nothing() -> None:
    world = World()
    decision = decide(world.request(a_job_as_quoted(world), dry_run=True), world.state)
    assert isinstance(decision, Admitted) and decision.dry_run
    (warning,) = decision.warnings
    assert "20.00" in warning
    assert world.reserved == 0 and not world.book.is_pending("uid-1")


def test_a_refused_dry_run_still_says_what_the_job_would_cost() -> None:
    world = _spent()
    decision = decide(world.request(a_job_as_quoted(world), dry_run=True), world.state)
    assert isinstance(decision, Denied) and decision.reason == "InsufficientBalance"
    assert decision.warnings and "20.00" in decision.warnings[0]


def test_a_retried_review_holds_once_and_a_uid_reused_for_another_job_is_refused() -> None:
    world = World(voucher=voucher("1000.00"))
    first = decide(world.request(a_job_as_quoted(world)), world.state)
    assert isinstance(first, Admitted)
    retried = decide(world.request(a_job_as_quoted(world)), world.state)  # the API server retries
    assert isinstance(retried, Admitted)
    assert world.reserved == D("20.00")
    other = decide(world.request(a_job_as_quoted(world, gpus=4)), world.state)
    assert isinstance(other, Denied)
    assert world.reserved == D("20.00")


def test_admissions_stop_at_exactly_what_the_voucher_affords() -> None:
    world = World(voucher=voucher("100.00"))  # five jobs of 20.00
    decisions = [
        decide(world.request(a_job_as_quoted(world, uid=f"uid-{n}")), world.state) for n in range(8)
    ]
    assert [isinstance(d, Admitted) for d in decisions] == [True] * 5 + [False] * 3
    assert world.reserved == D("100.00")
    assert {d.reason for d in decisions if isinstance(d, Denied)} == {"InsufficientBalance"}
