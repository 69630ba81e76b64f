"""What a job would cost, said before it is submitted: the text of the dry-run warning.

``kubectl apply --dry-run=server`` runs admission without storing the job; the webhook then
answers with a warning made here from the very decision a real create would get
(:func:`~suanli.vouchers.limits.evaluate`): the worst-case estimate, how it was priced, and
what the voucher would have left after holding it, or which of the voucher's limits would
refuse it. ``kubectl suanli estimate`` makes the same dry-run request and prints this warning,
so there is one estimate, not two that could disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from suanli.api.common import format_money
from suanli.api.computejob import ComputeJob
from suanli.api.voucherquota import VoucherQuota
from suanli.vouchers.keys import voucher_key
from suanli.vouchers.ledger import Ledger, VoucherTerms
from suanli.vouchers.limits import Allowed, Decision
from suanli.vouchers.pricing import PriceOffer, price_worst_case
from suanli.vouchers.refusals import Refusal

WARNING_PREFIX: Final = "suanli estimate: "
"""Every estimate warning starts so (the plugin picks it out of the API server's warnings)."""


def estimate_warning(
    job: ComputeJob,
    voucher: VoucherQuota,
    offers: Iterable[PriceOffer],
    ledger: Ledger,
    decision: Decision,
) -> str:
    """The dry-run warning for ``job`` against ``voucher`` (see the module notes)."""
    name = voucher_key(voucher)
    terms = VoucherTerms.from_voucher(voucher)
    ledger = ledger.with_terms(terms)
    currency = terms.currency
    priced = (
        decision.worst_case
        if isinstance(decision, Allowed)
        else price_worst_case(offers, job.spec, voucher)
    )
    if isinstance(priced, Refusal):
        head = f"no estimate: {priced.message}"
    else:
        head = f"worst case {priced}"
    if isinstance(decision, Allowed):
        left = ledger.available - decision.amount
        credit = f", credit line {format_money(terms.credit_line)}" if terms.credit_line else ""
        tail = (
            f"voucher {name} would hold it and have {format_money(left)} {currency} left "
            f"(amount {format_money(terms.amount)}, spent {format_money(ledger.spent)}, "
            f"reserved {format_money(ledger.reserved)}{credit}); the charge is the GPU time "
            "actually used, at most the estimate"
        )
    else:
        limits = ", ".join(dict.fromkeys(r.limit for r in decision.refusals))
        tail = f"voucher {name} would refuse it ({limits}): {decision.message}"
    return f"{WARNING_PREFIX}{head}; {tail}"
