"""A voucher programme's shared counters: its pool, each company's cap and credit line.

A programme (:class:`~suanli.api.voucherprogram.VoucherProgram`) pays a share of every charge
made on the vouchers it issued, up to its pool and, per company, up to the company's cap; the
company's own share runs up to a credit line. These counters are shared by every namespace of
every company in the programme, so they are the hottest in the system. They live here, in the
admission leader's memory beside the vouchers' ledgers (:mod:`suanli.vouchers.book`), and the
validating webhook checks and takes a job's programme hold in the same synchronous block as its
voucher hold: N concurrent creates never commit more than the pool, nor a company more than
its cap.

The split of a job
    A job's hold is its worst case ``W``. The programme's part is :func:`program_share` of it
    (the rule's percentage, rounded down to the cent), the company's the rest. When the job may
    run on a center that gets no subsidy (one its company owns, or one the programme does not
    select), the company's part is ``W`` itself: the hold covers either outcome. A job that can
    only run on such centers holds nothing of the programme.

    The charges of a job's attempts are split so that, together, they are split as one charge
    of their sum (:func:`split_charge`): the programme's part of an attempt is its share of
    everything subsidised so far, rounded down, less what it paid for the earlier attempts.
    Rounding each attempt down on its own would shift a cent per attempt onto the company, and
    a job whose attempts together cost its worst case would then owe more than its credit-line
    hold. Split this way, the programme never pays more than its hold and the company never
    owes more than its own. A related-party attempt is the company's alone. The split is
    written into the attempt's usage record, which is the truth the counters are rebuilt
    from.

Durability
    Nothing here is written on the admission path. A job carries its programme hold in its
    hold annotation (:mod:`suanli.vouchers.holds`); usage records carry the split of each
    charge. A new leader rebuilds every programme (:meth:`ProgramLedger.restore`) from the jobs
    whose voucher holds are still active and from the records; the programme's status is a
    copy written behind.

The company's own share is owed (``owed``) until it is invoiced and paid, which happens outside
suanli: the credit line bounds what a company may owe within the programme's period.
"""

from __future__ import annotations

from calendar import monthrange
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any, Final

from suanli.api.common import ZERO, format_money, format_timestamp
from suanli.api.membercluster import MemberCluster
from suanli.api.meta import API_VERSION
from suanli.api.voucherprogram import (
    COMPANY_CLASS_LABEL,
    PROGRAM_LABEL,
    SubsidyRule,
    VoucherProgram,
)
from suanli.vouchers.refusals import Refusal, RefusalReason

CENT: Final = Decimal("0.01")
RELATED_PARTY: Final = "RelatedParty"
NOT_QUALIFIED: Final = "MemberNotQualified"
HOLD_USED: Final = "HoldUsed"


def no_subsidy_reason(
    program: VoucherProgram, member: MemberCluster | None, company: str
) -> str | None:
    """Why ``program`` pays nothing for ``company``'s job on ``member``; None when it pays."""
    if member is None or not program.spec.member_selector.matches(member.metadata.labels):
        return NOT_QUALIFIED
    if member.spec.owner_company == company:
        return RELATED_PARTY
    return None


def program_share(amount: Decimal, percent: int) -> Decimal:
    """The programme's part of ``amount``: ``percent`` of it, rounded down to the cent (so the
    parts of a split never add up to more than the whole)."""
    return (amount * percent / 100).quantize(CENT, rounding=ROUND_DOWN)


def voucher_name(program: str) -> str:
    """The name of the VoucherQuota a programme issues in each namespace."""
    return f"program-{program}"


# --- rules and issued vouchers -------------------------------------------------------------


def _add_months(start: datetime, months: int) -> datetime:
    """The same day ``months`` later, or that month's last day when it is shorter."""
    month = start.month - 1 + months
    year, month = start.year + month // 12, month % 12 + 1
    return start.replace(year=year, month=month, day=min(start.day, monthrange(year, month)[1]))


def _counted_from(program: VoucherProgram, enrolled: datetime) -> datetime:
    """Where a company's months in ``program`` start: its enrolment, or the programme's start
    when it enrolled before the programme opened."""
    return max(enrolled, program.spec.period.start)


def choose_rule(
    program: VoucherProgram,
    labels: Mapping[str, str] | None,
    enrolled: datetime,
    now: datetime,
) -> SubsidyRule | None:
    """The first rule that applies to a company with ``labels`` that enrolled at ``enrolled``:
    its class matches and, for a time-limited rule, its months have not passed."""
    company_class = (labels or {}).get(COMPANY_CLASS_LABEL)
    start = _counted_from(program, enrolled)
    for rule in program.spec.rules:
        if rule.company_class is not None and rule.company_class != company_class:
            continue
        if rule.months is not None and now >= _add_months(start, rule.months):
            continue
        return rule
    return None


def next_change(program: VoucherProgram, enrolled: datetime, now: datetime) -> datetime | None:
    """The first moment after ``now`` when the voucher ``program`` issues to a company enrolled
    at ``enrolled`` may change by the clock alone: the period opens or ends, or a time-limited
    rule's months pass. None when nothing is left to change."""
    spec = program.spec
    start = _counted_from(program, enrolled)
    moments = [spec.period.start, spec.period.end]
    moments += [_add_months(start, rule.months) for rule in spec.rules if rule.months is not None]
    return min((moment for moment in moments if moment > now), default=None)


def issued_voucher(
    program: VoucherProgram, namespace: str, company: str, rule: SubsidyRule
) -> dict[str, Any]:
    """The VoucherQuota ``program`` issues in ``namespace``, owned by the programme (deleted
    with it by the garbage collector).

    Its amount is the rule's company cap and its credit line the programme's, so the voucher's
    own balance never binds before the programme's counters, which are exact across the
    company's namespaces; its window is the programme's period.
    """
    spec = program.spec
    name = program.metadata.name or ""
    return {
        "apiVersion": API_VERSION,
        "kind": "VoucherQuota",
        "metadata": {
            "name": voucher_name(name),
            "namespace": namespace,
            "labels": {PROGRAM_LABEL: name, "app.kubernetes.io/managed-by": "suanli"},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "VoucherProgram",
                    "name": name,
                    "uid": program.metadata.uid or "",
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": {
            "amount": format_money(rule.company_cap),
            "currency": spec.currency,
            "validFrom": format_timestamp(spec.period.start),
            "validUntil": format_timestamp(spec.period.end),
            "creditLine": format_money(spec.credit_line),
            "program": {
                "name": name,
                "company": company,
                "rule": rule.name,
                "sharePercent": rule.share_percent,
            },
        },
    }


# --- splits ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HoldSplit:
    """A job's hold, split: what the programme and the company each hold for it."""

    program: Decimal
    company: Decimal


def split_hold(amount: Decimal, percent: int, subsidised: Iterable[bool]) -> HoldSplit:
    """The split of a worst case ``amount`` over the centers the job may run on, each
    ``True`` when the programme subsidises it there (see the module docs)."""
    flags = list(subsidised)
    if not any(flags):
        return HoldSplit(ZERO, amount)
    share = program_share(amount, percent)
    return HoldSplit(share, amount - share if all(flags) else amount)


@dataclass(frozen=True, slots=True)
class ChargeSplit:
    """One attempt's charge, split; ``reason`` says why the programme paid nothing."""

    program: Decimal
    company: Decimal
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class JobCharges:
    """What a job's earlier attempts were charged on subsidised centers, what the programme
    paid of it, and what is left of the job's programme hold."""

    subsidised: Decimal = ZERO
    paid: Decimal = ZERO
    left: Decimal = ZERO


def split_charge(
    amount: Decimal, percent: int, earlier: JobCharges, no_subsidy: str | None
) -> ChargeSplit:
    """Split an attempt's charged ``amount``: the programme's share of the job's subsidised
    charges so far less what it ``earlier`` paid, at most what is left of its hold (see the
    module docs); nothing with ``no_subsidy`` (RelatedParty, MemberNotQualified)."""
    if no_subsidy is not None:
        return ChargeSplit(ZERO, amount, no_subsidy)
    due = program_share(earlier.subsidised + amount, percent) - earlier.paid
    share = max(ZERO, min(due, earlier.left, amount))
    reason = HOLD_USED if share == ZERO and amount > ZERO and due > ZERO else None
    return ChargeSplit(share, amount - share, reason)


def is_subsidised(split: ChargeSplit) -> bool:
    """Whether the attempt ran where the programme subsidises (it may still have paid nothing,
    its hold being used up)."""
    return split.reason not in (RELATED_PARTY, NOT_QUALIFIED)


# --- the counters ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProgramTerms:
    """What a programme allows, from its spec."""

    name: str
    currency: str
    pool: Decimal
    credit_line: Decimal
    caps: Mapping[str, Decimal]
    """Company cap by rule name."""

    @classmethod
    def from_program(cls, program: VoucherProgram) -> ProgramTerms:
        spec = program.spec
        return cls(
            name=program.metadata.name or "",
            currency=spec.currency,
            pool=spec.pool,
            credit_line=spec.credit_line,
            caps={rule.name: rule.company_cap for rule in spec.rules},
        )


@dataclass(slots=True)
class _Held:
    company: str
    rule: str
    program: Decimal
    own: Decimal
    subsidised: Decimal = ZERO
    """Charged so far on subsidised centers."""
    paid: Decimal = ZERO
    """The programme's part of those charges."""


@dataclass(slots=True)
class CompanyTotals:
    """One company's counters in a programme (mutable: the leader's memory)."""

    rule: str
    subsidy_held: Decimal = ZERO
    subsidy_spent: Decimal = ZERO
    own_held: Decimal = ZERO
    own_spent: Decimal = ZERO

    @property
    def subsidy_committed(self) -> Decimal:
        return self.subsidy_held + self.subsidy_spent

    @property
    def own_committed(self) -> Decimal:
        return self.own_held + self.own_spent


@dataclass
class ProgramLedger:
    """One programme's pool and per-company counters, with every job hold (see module docs).

    Mutable, and only ever changed synchronously by the admission leader: a check and the hold
    that follows it happen with no await in between.
    """

    terms: ProgramTerms
    _holds: dict[str, _Held] = field(default_factory=dict)
    _companies: dict[str, CompanyTotals] = field(default_factory=dict)
    _charged: set[str] = field(default_factory=set)
    held: Decimal = ZERO
    spent: Decimal = ZERO
    owed: Decimal = ZERO
    version: int = 0
    """Bumped on every change, so the status writer knows when to write."""

    @property
    def committed(self) -> Decimal:
        """The programme's share held for running jobs plus what it paid."""
        return self.held + self.spent

    @property
    def left(self) -> Decimal:
        return self.terms.pool - self.committed

    def company(self, company: str) -> CompanyTotals | None:
        return self._companies.get(company)

    def companies(self) -> Mapping[str, CompanyTotals]:
        return dict(self._companies)

    def holds(self, uid: str) -> bool:
        return uid in self._holds

    def held_uids(self) -> list[str]:
        """The jobs that hold a part of the pool."""
        return list(self._holds)

    def rule_of(self, uid: str) -> str | None:
        """The rule the job was admitted under, while it holds."""
        held = self._holds.get(uid)
        return held.rule if held is not None else None

    def earlier_charges(self, uid: str) -> JobCharges:
        """The job's charges so far, for :func:`split_charge` (nothing left when it holds no
        programme hold)."""
        held = self._holds.get(uid)
        if held is None:
            return JobCharges()
        return JobCharges(held.subsidised, held.paid, held.program)

    def check(self, uid: str, company: str, rule: str, split: HoldSplit) -> list[Refusal]:
        """Why the programme cannot hold ``split`` for ``company`` now; empty when it can, or
        when the job ``uid`` holds already (a retried admission is judged once)."""
        if uid in self._holds:
            return []
        name, currency = self.terms.name, self.terms.currency
        totals = self._companies.get(company) or CompanyTotals(rule)
        refusals: list[Refusal] = []
        if split.program > self.left:
            refusals.append(
                Refusal(
                    RefusalReason.PROGRAM_POOL_EXHAUSTED,
                    "spec.pool",
                    f"programme {name}'s pool is committed: its share of this job "
                    f"{format_money(split.program)} {currency}, left "
                    f"{_signed(self.left)} {currency} of pool "
                    f"{format_money(self.terms.pool)} {currency}",
                )
            )
        cap = self.terms.caps.get(rule, ZERO)
        if totals.subsidy_committed + split.program > cap:
            refusals.append(
                Refusal(
                    RefusalReason.COMPANY_CAP_EXCEEDED,
                    f"spec.rules[{rule}].companyCap",
                    f"company {company} would pass its cap in programme {name}: rule {rule} "
                    f"pays a company at most {format_money(cap)} {currency}, "
                    f"{format_money(totals.subsidy_committed)} {currency} is committed and "
                    f"this job's share is {format_money(split.program)} {currency}",
                )
            )
        if totals.own_committed + split.company > self.terms.credit_line:
            refusals.append(
                Refusal(
                    RefusalReason.CREDIT_LINE_EXCEEDED,
                    "spec.creditLine",
                    f"company {company} would pass its credit line in programme {name}: it may "
                    f"owe at most {format_money(self.terms.credit_line)} {currency}, "
                    f"{format_money(totals.own_committed)} {currency} is owed or held and "
                    f"its own share of this job is {format_money(split.company)} {currency}",
                )
            )
        return refusals

    def hold(self, uid: str, company: str, rule: str, split: HoldSplit) -> None:
        """Record the job's hold (after :meth:`check`, or as a fact on rebuild); a uid that
        holds already keeps its hold."""
        if uid in self._holds:
            return
        totals = self._companies.setdefault(company, CompanyTotals(rule))
        totals.rule = rule
        totals.subsidy_held += split.program
        totals.own_held += split.company
        self._holds[uid] = _Held(company, rule, split.program, split.company)
        self.held += split.program
        self.version += 1

    def release(self, uid: str) -> bool:
        """The job's voucher hold was closed or dropped: release what is left of its
        programme hold. Returns whether it held one."""
        held = self._holds.pop(uid, None)
        if held is None:
            return False
        totals = self._companies[held.company]
        totals.subsidy_held -= held.program
        totals.own_held -= held.own
        self.held -= held.program
        self.version += 1
        return True

    def charge(self, record: str, uid: str, company: str, rule: str, split: ChargeSplit) -> bool:
        """Book one usage record's split, once per record name: what it charges moves from the
        job's hold (if any is left) to spent. Returns whether it changed anything."""
        if record in self._charged:
            return False
        self._charged.add(record)
        totals = self._companies.setdefault(company, CompanyTotals(rule))
        held = self._holds.get(uid)
        if held is not None:
            program, own = min(held.program, split.program), min(held.own, split.company)
            held.program -= program
            held.own -= own
            if is_subsidised(split):
                held.subsidised += split.program + split.company
                held.paid += split.program
            totals.subsidy_held -= program
            totals.own_held -= own
            self.held -= program
        totals.subsidy_spent += split.program
        totals.own_spent += split.company
        self.spent += split.program
        self.owed += split.company
        self.version += 1
        return True

    def rule_totals(self) -> dict[str, tuple[int, Decimal, Decimal]]:
        """Per rule: companies served, committed, spent."""
        totals: dict[str, tuple[int, Decimal, Decimal]] = {}
        for company in self._companies.values():
            count, committed, spent = totals.get(company.rule, (0, ZERO, ZERO))
            totals[company.rule] = (
                count + 1,
                committed + company.subsidy_committed,
                spent + company.subsidy_spent,
            )
        return totals


@dataclass(frozen=True, slots=True)
class RestoredHold:
    """A job hold found on rebuild: the job exists and its voucher still holds it."""

    uid: str
    company: str
    rule: str
    split: HoldSplit


@dataclass(frozen=True, slots=True)
class RestoredCharge:
    """A usage record's split found on rebuild."""

    record: str
    uid: str
    company: str
    rule: str
    split: ChargeSplit


def restore(
    terms: ProgramTerms, holds: Iterable[RestoredHold], charges: Iterable[RestoredCharge]
) -> ProgramLedger:
    """The programme's counters rebuilt from its jobs' holds and its usage records: holds
    first, then every record charged against them, as if charged live."""
    ledger = ProgramLedger(terms)
    for hold in holds:
        ledger.hold(hold.uid, hold.company, hold.rule, hold.split)
    for charge in sorted(charges, key=lambda c: c.record):
        ledger.charge(charge.record, charge.uid, charge.company, charge.rule, charge.split)
    return ledger


@dataclass
class ProgramBook:
    """Every programme's counters, and which programme holds each job (by uid)."""

    _ledgers: dict[str, ProgramLedger] = field(default_factory=dict)
    _by_uid: dict[str, str] = field(default_factory=dict)

    def ledger(self, name: str) -> ProgramLedger | None:
        return self._ledgers.get(name)

    def names(self) -> list[str]:
        return sorted(self._ledgers)

    def install(self, ledger: ProgramLedger) -> None:
        """Adopt a rebuilt ledger, replacing the programme's."""
        name = ledger.terms.name
        self._by_uid = {uid: p for uid, p in self._by_uid.items() if p != name}
        self._ledgers[name] = ledger
        for uid in ledger.held_uids():
            self._by_uid[uid] = name

    def set_terms(self, terms: ProgramTerms) -> None:
        ledger = self._ledgers.get(terms.name)
        if ledger is not None and ledger.terms != terms:
            ledger.terms = terms
            ledger.version += 1

    def forget(self, name: str) -> None:
        self._ledgers.pop(name, None)
        self._by_uid = {uid: p for uid, p in self._by_uid.items() if p != name}

    def hold(self, name: str, uid: str, company: str, rule: str, split: HoldSplit) -> None:
        ledger = self._ledgers[name]
        ledger.hold(uid, company, rule, split)
        self._by_uid[uid] = name

    def release(self, uid: str) -> str | None:
        """Release the job's programme hold, if any; returns the programme's name."""
        name = self._by_uid.pop(uid, None)
        if name is None:
            return None
        ledger = self._ledgers.get(name)
        if ledger is not None:
            ledger.release(uid)
        return name


def _signed(value: Decimal) -> str:
    return f"-{format_money(-value)}" if value < 0 else format_money(value)
