"""A voucher's conditions (Active, Expired, Exhausted, LedgerNearlyFull) from its terms, ledger
and the time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final

from suanli.api.common import ConditionStatus, format_money, format_timestamp
from suanli.api.reasons import VoucherConditionType, VoucherReason
from suanli.api.voucherquota import VoucherQuota
from suanli.vouchers.ledger import Ledger

LEDGER_WARNING_SHARE: Final = Decimal("0.9")
"""LedgerNearlyFull turns True when the ledger holds this share of the entries it may."""


@dataclass(frozen=True, slots=True)
class ConditionState:
    type: VoucherConditionType
    status: ConditionStatus
    reason: VoucherReason
    message: str


def voucher_conditions(
    voucher: VoucherQuota, ledger: Ledger, now: datetime
) -> list[ConditionState]:
    """The four conditions, each with a message written for the tenant."""
    spec = voucher.spec
    currency = spec.currency
    true, false = ConditionStatus.TRUE, ConditionStatus.FALSE
    if now >= spec.valid_until:
        expired = ConditionState(
            VoucherConditionType.EXPIRED,
            true,
            VoucherReason.VALIDITY_ENDED,
            f"The voucher expired at {format_timestamp(spec.valid_until)}; no new job is admitted.",
        )
    else:
        expired = ConditionState(
            VoucherConditionType.EXPIRED,
            false,
            VoucherReason.WITHIN_VALIDITY,
            "The voucher has not expired.",
        )
    available = ledger.available
    if available <= 0:
        exhausted = ConditionState(
            VoucherConditionType.EXHAUSTED,
            true,
            VoucherReason.BALANCE_EXHAUSTED,
            f"Nothing is left to reserve: spent {format_money(ledger.spent)} and reserved "
            f"{format_money(ledger.reserved)} {currency} use up amount plus credit line.",
        )
    elif ledger.spent + ledger.reserved > spec.amount:
        exhausted = ConditionState(
            VoucherConditionType.EXHAUSTED,
            false,
            VoucherReason.USING_CREDIT_LINE,
            f"The amount is used up; {format_money(available)} {currency} of the credit line "
            "remains (to be paid later).",
        )
    else:
        exhausted = ConditionState(
            VoucherConditionType.EXHAUSTED,
            false,
            VoucherReason.BALANCE_AVAILABLE,
            f"{format_money(available)} {currency} can still be reserved.",
        )
    if expired.status is true:
        active = ConditionState(
            VoucherConditionType.ACTIVE, false, VoucherReason.VALIDITY_ENDED, expired.message
        )
    elif spec.valid_from is not None and now < spec.valid_from:
        active = ConditionState(
            VoucherConditionType.ACTIVE,
            false,
            VoucherReason.NOT_YET_VALID,
            f"The voucher becomes valid at {format_timestamp(spec.valid_from)}.",
        )
    elif exhausted.status is true:
        active = ConditionState(
            VoucherConditionType.ACTIVE, false, VoucherReason.BALANCE_EXHAUSTED, exhausted.message
        )
    else:
        active = ConditionState(
            VoucherConditionType.ACTIVE,
            true,
            VoucherReason.WITHIN_VALIDITY,
            "New jobs may be charged to this voucher.",
        )
    return [active, expired, exhausted, _ledger_room(ledger)]


def _ledger_room(ledger: Ledger) -> ConditionState:
    used, most = len(ledger.entries), ledger.terms.max_entries
    if used >= LEDGER_WARNING_SHARE * most:
        return ConditionState(
            VoucherConditionType.LEDGER_NEARLY_FULL,
            ConditionStatus.TRUE,
            VoucherReason.LEDGER_NEARLY_FULL,
            f"The ledger records {used} of the {most} jobs it can hold; at {most} new jobs are "
            "refused (LedgerFull). Finished jobs leave it at each recount; if it stays full, "
            "too many jobs run at once on this voucher: lower spec.limits.maxConcurrentJobs or "
            "split the work over several vouchers.",
        )
    return ConditionState(
        VoucherConditionType.LEDGER_NEARLY_FULL,
        ConditionStatus.FALSE,
        VoucherReason.LEDGER_HAS_ROOM,
        f"The ledger records {used} of the {most} jobs it can hold.",
    )
