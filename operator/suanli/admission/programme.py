"""A programme voucher's part of admission: the programme's share of a job's hold, and whether
the programme can take it (its pool, the company's cap and credit line).

Synchronous, on the in-memory :class:`~suanli.vouchers.programs.ProgramBook`: the decision
(:mod:`.decide`) judges and takes the hold with no await between.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from suanli.api.computejob import ComputeJob
from suanli.api.membercluster import MemberCluster
from suanli.api.voucherprogram import VoucherProgram
from suanli.api.voucherquota import VoucherQuota
from suanli.vouchers.holds import ProgramQuote
from suanli.vouchers.limits import Allowed, Refused, quote
from suanli.vouchers.pricing import PriceOffer, WorstCase
from suanli.vouchers.programs import HoldSplit, ProgramBook, no_subsidy_reason, split_hold
from suanli.vouchers.refusals import Refusal, RefusalReason


def program_quote(
    program_specs: Mapping[str, VoucherProgram],
    voucher: VoucherQuota,
    worst_case: WorstCase,
    members: Sequence[MemberCluster],
) -> ProgramQuote | None:
    """The programme's part of a job's hold on ``voucher``; None for a voucher no programme
    issued, or whose programme is gone (the voucher goes with it)."""
    share = voucher.spec.program
    program = program_specs.get(share.name) if share is not None else None
    if share is None or program is None:
        return None
    by_name = {member.metadata.name: member for member in members}
    subsidised = [
        no_subsidy_reason(program, by_name.get(offer.cluster), share.company) is None
        for offer in worst_case.eligible
    ]
    split = split_hold(worst_case.amount, share.share_percent, subsidised)
    return ProgramQuote(share.name, share.company, share.rule, split.program, split.company)


def judge(
    program_specs: Mapping[str, VoucherProgram],
    programs: ProgramBook,
    job: ComputeJob,
    voucher: VoucherQuota,
    *,
    offers: Sequence[PriceOffer],
    members: Sequence[MemberCluster],
    now: datetime,
) -> ProgramQuote | Refused | None:
    """The programme's part of the job's hold, or why the programme cannot take it; None for
    a voucher no programme issued, or a job its voucher refuses anyway (the voucher's limits
    then say why)."""
    if voucher.spec.program is None:
        return None
    priced = quote(job, voucher, offers, now)
    if not isinstance(priced, Allowed):
        return None
    part = program_quote(program_specs, voucher, priced.worst_case, members)
    if part is None:
        return None
    refusals = program_refusals(programs, job.metadata.uid or "", part)
    return Refused(tuple(refusals)) if refusals else part


def program_refusals(programs: ProgramBook, uid: str, quoted: ProgramQuote) -> list[Refusal]:
    """Why the programme cannot hold ``quoted`` for the job ``uid`` now (pool, company cap,
    credit line); none when the job holds already."""
    ledger = programs.ledger(quoted.name)
    if ledger is None:
        return [
            Refusal(
                RefusalReason.PROGRAM_POOL_EXHAUSTED,
                "spec.program",
                f"programme {quoted.name} is not loaded yet; submit again in a few seconds",
            )
        ]
    return ledger.check(uid, quoted.company, quoted.rule, hold_split(quoted))


def hold_program(programs: ProgramBook, uid: str, quoted: ProgramQuote) -> None:
    """Take the job's programme hold (right after :func:`program_refusals`, no await between)."""
    programs.hold(quoted.name, uid, quoted.company, quoted.rule, hold_split(quoted))


def hold_split(quoted: ProgramQuote) -> HoldSplit:
    """The programme's and the company's parts of a quoted hold."""
    return HoldSplit(quoted.program, quoted.company_share)
