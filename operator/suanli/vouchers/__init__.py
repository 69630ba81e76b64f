"""Compute vouchers: pricing, admission limits, reservation and charging rules.

Pure decision code: no Kubernetes I/O, no kopf. Handlers read objects, call these functions
and write what they return.

* :mod:`~suanli.vouchers.pricing`: price offers from MemberClusters, a job's worst case
  (rounded up) and its actual charge (rounded half up), GPU-seconds.
* :mod:`~suanli.vouchers.limits`: :func:`evaluate`, the admission decision with every failing
  limit and a message that says by how much.
* :mod:`~suanli.vouchers.ledger`: the immutable :class:`Ledger` of one voucher, keyed by job
  uid (reserve, charge each attempt once, close, fold) and its JSON form for the voucher's
  status: the one module that changes money.
* :mod:`~suanli.vouchers.usage`: what an ended attempt costs, from recorded facts, and its
  UsageRecord.
* :mod:`~suanli.vouchers.book`: :class:`VoucherBook`, every voucher's ledger as the admission
  leader keeps it in memory, with the holds of jobs not yet seen stored.
* :mod:`~suanli.vouchers.holds`: the hold a job carries in its annotation from admission.
* :mod:`~suanli.vouchers.recount`: :func:`recount`, reconciling a ledger with the ComputeJobs
  and usage records that exist; :func:`rebuild`, a ledger from job statuses and records.
* :mod:`~suanli.vouchers.refusals`: :class:`RefusalReason` and :class:`Refusal`.

The admission flow, per voucher, in the admission leader (no await between the last two)::

    offers = offers_from_members(members)
    hold = quote(job, voucher, offers, now)                    # the mutating webhook's annotation
    decision = evaluate(job, voucher, offers, book.ledger(key), now)   # dry-run stops here
    book.admit(key, decision.request, deadline)                # pending until the job is stored
    # the voucher's status (book.durable(key)) is written behind, coalesced per voucher
"""

from suanli.vouchers.keys import job_key, voucher_key
from suanli.vouchers.ledger import (
    EntryState,
    JobEntry,
    Ledger,
    LedgerError,
    NotReservedError,
    ReservationRefusedError,
    ReservationRequest,
    VoucherTerms,
    empty_ledger,
)
from suanli.vouchers.limits import Allowed, Decision, Refused, check_voucher_limits, evaluate
from suanli.vouchers.pricing import (
    PriceOffer,
    WorstCase,
    charge_for,
    eligible_offers,
    gpu_seconds,
    offers_from_members,
    price_worst_case,
    worst_case_cost,
)
from suanli.vouchers.recount import RecountResult, entry_from_job, rebuild, recount
from suanli.vouchers.refusals import Refusal, RefusalReason

__all__ = [
    "Allowed",
    "Decision",
    "EntryState",
    "JobEntry",
    "Ledger",
    "LedgerError",
    "NotReservedError",
    "PriceOffer",
    "RecountResult",
    "Refusal",
    "RefusalReason",
    "Refused",
    "ReservationRefusedError",
    "ReservationRequest",
    "VoucherTerms",
    "WorstCase",
    "charge_for",
    "check_voucher_limits",
    "eligible_offers",
    "empty_ledger",
    "entry_from_job",
    "evaluate",
    "gpu_seconds",
    "job_key",
    "offers_from_members",
    "price_worst_case",
    "rebuild",
    "recount",
    "voucher_key",
    "worst_case_cost",
]
