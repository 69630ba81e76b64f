"""The hold a ComputeJob carries from admission: its voucher, worst-case amount and GPUs.

Admission answers without writing to the API (see :mod:`suanli.vouchers.book`), so the job
itself must carry what it was admitted for: the mutating webhook quotes the hold into the
annotation :data:`HOLD_ANNOTATION` as the job is created, the validating webhook admits the job
only if the annotation is exactly what it quotes itself, and the API server then stores the
annotation with the job, in the same write. A job that exists therefore proves its hold, and a
new admission leader rebuilds every voucher's holds from the jobs it lists (the recount,
:mod:`suanli.vouchers.recount`). Neither a tenant nor anyone else may change the annotation
after the create (the update webhook refuses it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from suanli.api.common import format_money, parse_money
from suanli.api.names import HOLD_ANNOTATION


@dataclass(frozen=True, slots=True)
class ProgramQuote:
    """A job's hold on the programme that issued its voucher (see :mod:`suanli.vouchers.programs`).

    Attributes:
        name: the VoucherProgram.
        company: the company the voucher was issued to.
        rule: the subsidy rule applied.
        program: the programme's part of the hold.
        company_share: the company's part, against its credit line.
    """

    name: str
    company: str
    rule: str
    program: Decimal
    company_share: Decimal

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "company": self.company,
            "rule": self.rule,
            "share": format_money(self.program),
            "own": format_money(self.company_share),
        }


@dataclass(frozen=True, slots=True)
class QuotedHold:
    """What a job was admitted for.

    Attributes:
        voucher: the name of the voucher (in the job's namespace) that holds it.
        amount: the worst-case cost held, in the voucher's currency.
        gpus: the GPUs the job holds while it runs.
        program: its part on a voucher programme, when the voucher is a programme's (the key
            ``program`` is absent otherwise, so holds written before programmes still parse).
    """

    voucher: str
    amount: Decimal
    gpus: int
    program: ProgramQuote | None = None

    def annotation(self) -> str:
        """The annotation's value: compact JSON with sorted keys, so equal holds are equal text."""
        data: dict[str, object] = {
            "voucher": self.voucher,
            "amount": format_money(self.amount),
            "gpus": self.gpus,
        }
        if self.program is not None:
            data["program"] = self.program.to_dict()
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


def read_hold(annotations: Mapping[str, str] | None) -> QuotedHold | None:
    """The hold in ``annotations``; None when there is none or it is not one suanli wrote."""
    text = (annotations or {}).get(HOLD_ANNOTATION)
    if not text:
        return None
    try:
        data = json.loads(text)
        voucher, gpus = data["voucher"], data["gpus"]
        if not isinstance(voucher, str) or not voucher:
            return None
        if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 0:
            return None
        program = _read_program(data.get("program"))
        return QuotedHold(voucher, parse_money(data["amount"]), gpus, program)
    except (ValueError, TypeError, KeyError):
        return None


def _read_program(data: object) -> ProgramQuote | None:
    if not isinstance(data, dict):
        return None
    name, company, rule = data["name"], data["company"], data["rule"]
    if not all(isinstance(value, str) and value for value in (name, company, rule)):
        raise ValueError("bad programme hold")
    return ProgramQuote(name, company, rule, parse_money(data["share"]), parse_money(data["own"]))
