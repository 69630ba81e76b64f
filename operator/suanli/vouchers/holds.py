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
from typing import Final

from suanli.api.common import format_money, parse_money

HOLD_ANNOTATION: Final = "suanli.io/hold"


@dataclass(frozen=True, slots=True)
class QuotedHold:
    """What a job was admitted for.

    Attributes:
        voucher: the name of the voucher (in the job's namespace) that holds it.
        amount: the worst-case cost held, in the voucher's currency.
        gpus: the GPUs the job holds while it runs.
    """

    voucher: str
    amount: Decimal
    gpus: int

    def annotation(self) -> str:
        """The annotation's value: compact JSON with sorted keys, so equal holds are equal text."""
        return json.dumps(
            {"voucher": self.voucher, "amount": format_money(self.amount), "gpus": self.gpus},
            sort_keys=True,
            separators=(",", ":"),
        )


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
        return QuotedHold(voucher, parse_money(data["amount"]), gpus)
    except (ValueError, TypeError, KeyError):
        return None
