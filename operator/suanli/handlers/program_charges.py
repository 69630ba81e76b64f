"""Charges on a programme's vouchers: each attempt's split, and booking it on the programme.

Called by :class:`~suanli.controller.charging.RecordBilling` for every usage record it writes:
:meth:`ProgramCharges.split` decides the record's ``spec.program`` (the programme's share of
the attempt under the rule the job was admitted with, so that the job's attempts together are
split as one charge; nothing on a center the company owns or the programme does not select)
before the record is created, and :meth:`ProgramCharges.booked` books the stored record's split
on the programme's counters. A record is created once (its name is derived from the job and
attempt), so its split is decided once, and the counters can be rebuilt from the records to
the cent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from suanli import metrics
from suanli.api.common import format_money, parse_money
from suanli.api.membercluster import MemberCluster
from suanli.api.voucherprogram import VoucherProgram
from suanli.handlers.voucher_cache import VoucherCache
from suanli.vouchers.programs import (
    ChargeSplit,
    JobCharges,
    ProgramBook,
    RestoredCharge,
    no_subsidy_reason,
    split_charge,
)
from suanli.vouchers.statement_objects import DirtyMonths

logger = logging.getLogger(__name__)


class ProgramCharges:
    """Splits each attempt's charge on a programme voucher, and books the record's split.

    Args:
        vouchers: every VoucherQuota, as last seen (which programme a voucher belongs to).
        program_specs: every VoucherProgram's spec by name (its rules and member selector).
        member_of: a MemberCluster by name (whether the programme pays for a center).
        programs: the programmes' counters (kept by the leader).
        statements: the months whose statements a booked record changes.
    """

    def __init__(
        self,
        vouchers: VoucherCache,
        program_specs: Mapping[str, VoucherProgram],
        member_of: Callable[[str], MemberCluster | None],
        programs: ProgramBook,
        statements: DirtyMonths,
    ) -> None:
        self._vouchers = vouchers
        self._program_specs = program_specs
        self._member_of = member_of
        self._programs = programs
        self._statements = statements

    def split(
        self, namespace: str, voucher: str, uid: str, cluster: str, amount: Decimal
    ) -> dict[str, Any] | None:
        """The ``spec.program`` of the attempt's usage record; None off programmes."""
        parsed = self._vouchers.get(namespace, voucher)
        share = parsed.voucher.spec.program if parsed is not None else None
        program = self._program_specs.get(share.name) if share is not None else None
        if share is None or program is None:
            return None
        reason = no_subsidy_reason(program, self._member_of(cluster), share.company)
        ledger = self._programs.ledger(share.name)
        # The job is charged under the rule it was admitted under, even when its company has
        # moved to another since (a start-up's first months ended while it ran).
        rule = (ledger.rule_of(uid) if ledger is not None else None) or share.rule
        percent = next(
            (r.share_percent for r in program.spec.rules if r.name == rule), share.share_percent
        )
        earlier = ledger.earlier_charges(uid) if ledger is not None else JobCharges()
        split = split_charge(amount, percent, earlier, reason)
        result: dict[str, Any] = {
            "name": share.name,
            "company": share.company,
            "rule": rule,
            "programShare": format_money(split.program),
            "companyShare": format_money(split.company),
        }
        if split.reason is not None:
            result["noSubsidyReason"] = split.reason
        return result

    def booked(self, record: Mapping[str, Any]) -> None:
        """Book a stored usage record's split on its programme (once per record)."""
        self._statements.mark_record(record)  # its month's statements change
        charge = restored_charge(record)
        if charge is None:
            return
        ledger = self._programs.ledger(program_of(record))
        if ledger is not None and ledger.charge(
            charge.record, charge.uid, charge.company, charge.rule, charge.split
        ):
            currency = ledger.terms.currency
            metrics.PROGRAM_SPENT.labels(ledger.terms.name, currency).inc(
                float(charge.split.program)
            )
            metrics.PROGRAM_OWED.labels(ledger.terms.name, currency).inc(
                float(charge.split.company)
            )


def program_of(record: Mapping[str, Any]) -> str:
    return str(((record.get("spec") or {}).get("program") or {}).get("name", ""))


def restored_charge(record: Mapping[str, Any]) -> RestoredCharge | None:
    """A usage record's programme split, or None when it has none (or is malformed)."""
    spec = record.get("spec") or {}
    split = spec.get("program")
    if not isinstance(split, dict):
        return None
    try:
        return RestoredCharge(
            record=str(record["metadata"]["name"]),
            uid=str(spec["job"]["uid"]),
            company=str(split["company"]),
            rule=str(split["rule"]),
            split=ChargeSplit(
                parse_money(split["programShare"]),
                parse_money(split["companyShare"]),
                split.get("noSubsidyReason"),
            ),
        )
    except (KeyError, TypeError, ValueError):
        logger.warning("usage record %s has a malformed programme split", record.get("metadata"))
        return None
