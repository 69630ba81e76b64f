"""Deciding a voucher's pending reservation requests together, for one status write.

Concurrent creates against one voucher race on its status: each webhook call would read the
balance, reserve, and write with optimistic concurrency, and all but one would conflict and
retry, so N racing creates cost O(N^2) writes. Kubernetes' ResourceQuota admission avoids that
by queueing the requests for one quota in process and charging a batch of them in a single
update. :func:`commit_batch` is the decision half of that scheme: given the ledger as last
read and the requests in arrival order, it decides each one against the ledger as it stands
after the earlier ones, and returns the new ledger to write plus one decision per request.

If the write conflicts, the caller re-reads the voucher and calls :func:`commit_batch` again
with the same requests: the function is pure, and a request whose hold is already in the
re-read ledger is admitted again without a second hold (reservations are idempotent).
Requests refused here were refused against a ledger that includes every earlier admission in
the batch, so N requests against a voucher that affords K of them admit exactly K.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from suanli.vouchers.ledger import Ledger, ReservationRequest
from suanli.vouchers.refusals import Refusal, RefusalReason, join_messages


@dataclass(frozen=True, slots=True)
class BatchDecision:
    """The answer to one request of a batch.

    Attributes:
        request: the request decided.
        refusals: why it was refused; empty when it was admitted.
    """

    request: ReservationRequest
    refusals: tuple[Refusal, ...] = ()

    @property
    def admitted(self) -> bool:
        """Whether the request holds its reservation in the new ledger."""
        return not self.refusals

    @property
    def reason(self) -> RefusalReason | None:
        """The first refusal's reason, or ``None`` when admitted."""
        return self.refusals[0].reason if self.refusals else None

    @property
    def message(self) -> str:
        """The refusal messages for the admission response; empty when admitted."""
        return join_messages(self.refusals)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The ledger to write and the decision for each request.


    Attributes:
        ledger: the ledger after every admitted request.
        decisions: one per request, in request order.
        changed: whether ``ledger`` differs from the one the batch started from, i.e. whether
            a status write is needed (a batch of repeats of held requests needs none).
    """

    ledger: Ledger
    decisions: tuple[BatchDecision, ...]
    changed: bool

    @property
    def admitted(self) -> tuple[ReservationRequest, ...]:
        """The admitted requests, in order."""
        return tuple(d.request for d in self.decisions if d.admitted)


def commit_batch(ledger: Ledger, requests: Iterable[ReservationRequest]) -> BatchResult:
    """Decide ``requests`` in order against ``ledger``; see the module docs.

    Each admitted request is reserved before the next is decided, so later requests see it in
    the balance and the concurrency caps. A request for a job already held with the same
    amount and GPUs is admitted without a second hold; one that conflicts (same job, another
    amount) is refused, as is a second request for a job with another amount in the batch.

    Raises:
        ValueError: a request's amount is not money or its GPUs are negative.
    """
    requests = tuple(requests)
    new, outcomes = ledger.reserve_many(requests)
    decisions = tuple(
        BatchDecision(request, refusals)
        for request, refusals in zip(requests, outcomes, strict=True)
    )
    return BatchResult(new, decisions, changed=new is not ledger)
