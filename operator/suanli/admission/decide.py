"""The admission decision for a new ComputeJob: a function of the request and the in-memory
state, with nothing awaited from its first read of a ledger to the hold it takes.

The webhook (:mod:`suanli.handlers.admission`) does what needs the API first: it validates the
job, reads its references, finds its voucher and makes sure the voucher's ledger is loaded.
Then :func:`decide`, synchronously: no other request can take what this one is judged on.

1. This replica must lead and hold the voucher's ledger (else ``NotLeader``, 503: retry).
2. A programme voucher's programme must take its part of the hold: its pool, the company's cap
   and credit line (:mod:`.programme`).
3. The voucher's limits must allow the worst case (:func:`~suanli.vouchers.limits.evaluate`).
4. The job must carry exactly the hold the mutating step quoted (else ``QuoteChanged``, 409: a
   price or the voucher changed in between, or the annotation was not suanli's).
5. Then the hold is taken in the ledger, with a deadline for the job to be seen stored, and
   the programme's part beside it. A dry run stops before this step and holds nothing.

A refusal at step 2 or 3 is about the tenant's money, and the webhook records it on the
voucher (the job is never stored); the others are not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from suanli.admission.gate import AdmissionGate
from suanli.admission.programme import hold_program, judge
from suanli.api.computejob import ComputeJob
from suanli.api.membercluster import MemberCluster
from suanli.api.names import HOLD_ANNOTATION
from suanli.api.voucherprogram import VoucherProgram
from suanli.api.voucherquota import VoucherQuota
from suanli.vouchers.book import VoucherBook
from suanli.vouchers.estimate import estimate_warning
from suanli.vouchers.holds import QuotedHold, read_hold
from suanli.vouchers.ledger import Ledger, ReservationRequest
from suanli.vouchers.limits import Refused, evaluate
from suanli.vouchers.pricing import PriceOffer
from suanli.vouchers.programs import ProgramBook


@dataclass(frozen=True)
class AdmissionRequest:
    """One ComputeJob create, with what the webhook read for it."""

    job: ComputeJob
    voucher: VoucherQuota
    offers: Sequence[PriceOffer]
    members: Sequence[MemberCluster]
    now: datetime
    deadline: datetime
    """Until when the hold waits for its job to be seen stored."""
    dry_run: bool = False


@dataclass(frozen=True)
class AdmissionState:
    """What the leader keeps in memory that the decision reads and changes."""

    gate: AdmissionGate
    book: VoucherBook
    programs: ProgramBook
    program_specs: Mapping[str, VoucherProgram]


@dataclass(frozen=True)
class Admitted:
    hold: QuotedHold
    warnings: tuple[str, ...] = ()
    dry_run: bool = False


@dataclass(frozen=True)
class Denied:
    message: str
    reason: str
    code: int = 403
    warnings: tuple[str, ...] = ()
    on_voucher: bool = False
    """Whether the refusal concerns the voucher's money (an Event on the voucher says it)."""


@dataclass(frozen=True)
class _Judged:
    """A job its programme and voucher allow, carrying the hold they quote."""

    hold: QuotedHold
    reservation: ReservationRequest
    warnings: tuple[str, ...]


def decide(request: AdmissionRequest, state: AdmissionState) -> Admitted | Denied:
    """Admit ``request``'s job (taking its hold) or say why not; see the module notes."""
    voucher = request.voucher
    key = (voucher.metadata.namespace or "", voucher.metadata.name or "")
    ledger = state.book.ledger(key)
    if ledger is None or not state.gate.is_open:
        return Denied(state.gate.refusal, "NotLeader", code=503)
    judged = _judge(request, state, ledger)
    if isinstance(judged, Denied):
        return judged
    if request.dry_run:
        return Admitted(judged.hold, judged.warnings, dry_run=True)
    held = state.book.admit(key, judged.reservation, request.deadline)
    if not held.admitted:  # the same ledger as the judgement's: only a repeated uid gets here
        return Denied(held.message, held.reason or "Refused")
    if judged.hold.program is not None:
        hold_program(state.programs, judged.reservation.uid, judged.hold.program)
    return Admitted(judged.hold)


def _judge(request: AdmissionRequest, state: AdmissionState, ledger: Ledger) -> _Judged | Denied:
    """Steps 2 to 4: the programme, the voucher's limits and the quoted hold."""
    job, voucher = request.job, request.voucher
    program = judge(
        state.program_specs,
        state.programs,
        job,
        voucher,
        offers=request.offers,
        members=request.members,
        now=request.now,
    )
    if isinstance(program, Refused):
        return Denied(program.message, program.reason, on_voucher=True)
    decision = evaluate(job, voucher, request.offers, ledger, request.now)
    warnings: tuple[str, ...] = ()
    if request.dry_run:  # the cost before submit; it goes out with a refusal too
        warnings = (estimate_warning(job, voucher, request.offers, ledger, decision),)
    if isinstance(decision, Refused):
        return Denied(decision.message, decision.reason, warnings=warnings, on_voucher=True)
    reservation = decision.request
    quoted = QuotedHold(voucher.metadata.name or "", reservation.amount, reservation.gpus, program)
    if read_hold(job.metadata.annotations) != quoted:
        return Denied(
            f"metadata.annotations[{HOLD_ANNOTATION}]: the job does not carry the hold suanli "
            f"quotes for it ({quoted.annotation()}): the price or the voucher "
            "changed while it was admitted, or the annotation was not set by suanli",
            "QuoteChanged",
            code=409,
            warnings=warnings,
        )
    return _Judged(quoted, reservation, warnings)
