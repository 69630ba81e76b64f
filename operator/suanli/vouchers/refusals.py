"""Why a voucher refuses a job: typed reasons and the refusal record every check returns.

Each check in this package answers with zero or more :class:`Refusal` values rather than
raising, so that admission can report every broken limit at once and the batch commit can
decide many requests without exceptions in its loop. A refusal carries three things:

* ``reason``: a :class:`RefusalReason`, a CamelCase word programs match on (metrics, tests);
* ``limit``: the voucher field that refused, as a JSON path (``spec.limits.maxGPUsPerJob``);
* ``message``: a sentence for the tenant that names the voucher, the limit and by how much.

The reasons are finer than the ``Reserved`` condition reasons of a ComputeJob; use
:attr:`Refusal.job_reason` to pick the condition reason a refusal maps to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from suanli.api.reasons import JobReason


class RefusalReason(StrEnum):
    """Why a voucher does not cover a job (or a reservation request)."""

    NOT_YET_VALID = "VoucherNotYetValid"
    """``now`` is before the voucher's ``validFrom``."""
    EXPIRED = "VoucherExpired"
    """``now`` is at or after the voucher's ``validUntil``."""
    TOO_MANY_GPUS_PER_JOB = "TooManyGPUsPerJob"
    """The job's ``replicas x gpusPerReplica`` is above ``limits.maxGPUsPerJob``."""
    RUNTIME_TOO_LONG = "RuntimeTooLong"
    """The job's ``maxRuntime`` is above ``limits.maxRuntime``."""
    CLUSTER_NOT_ALLOWED = "ClusterNotAllowed"
    """The job's ``placement.clusters`` leaves none of the voucher's ``allowedClusters``."""
    GPU_MODEL_NOT_ALLOWED = "GPUModelNotAllowed"
    """The job lists a GPU model the voucher's ``allowedGPUModels`` excludes."""
    CURRENCY_MISMATCH = "CurrencyMismatch"
    """Every member that could run the job prices in another currency than the voucher's."""
    NO_ELIGIBLE_OFFER = "NoEligibleOffer"
    """No uncordoned member offers a GPU model the job accepts where job and voucher allow."""
    NEVER_FITS = "NeverFits"
    """The gang fits on no eligible member's nodes even with every device free."""
    CONCURRENT_GPUS_EXCEEDED = "ConcurrentGPUsExceeded"
    """Admitting the job would hold more GPUs at once than ``limits.maxConcurrentGPUs``."""
    CONCURRENT_JOBS_EXCEEDED = "ConcurrentJobsExceeded"
    """Admitting the job would hold more unfinished jobs than ``limits.maxConcurrentJobs``."""
    INSUFFICIENT_BALANCE = "InsufficientBalance"
    """``spent + reserved + worst case`` would exceed ``amount + creditLine``."""
    RESERVATION_CONFLICT = "ReservationConflict"
    """The job already holds a reservation of another amount or GPU count."""
    JOB_CLOSED = "JobClosed"
    """The job was already charged or released on this voucher; it cannot reserve again."""
    LEDGER_FULL = "LedgerFull"
    """The voucher's ledger holds as many entries as its status can store."""
    PROGRAM_POOL_EXHAUSTED = "ProgramPoolExhausted"
    """The programme's share of the job would take its committed past ``spec.pool``."""
    COMPANY_CAP_EXCEEDED = "CompanyCapExceeded"
    """The programme's share would take the company past its rule's ``companyCap``."""
    CREDIT_LINE_EXCEEDED = "CreditLineExceeded"
    """The company's own share would take what it owes past the programme's ``creditLine``."""


_JOB_REASONS: Final[dict[RefusalReason, JobReason]] = {
    RefusalReason.NOT_YET_VALID: JobReason.VOUCHER_INACTIVE,
    RefusalReason.EXPIRED: JobReason.VOUCHER_INACTIVE,
    RefusalReason.TOO_MANY_GPUS_PER_JOB: JobReason.LIMIT_EXCEEDED,
    RefusalReason.RUNTIME_TOO_LONG: JobReason.LIMIT_EXCEEDED,
    RefusalReason.CLUSTER_NOT_ALLOWED: JobReason.LIMIT_EXCEEDED,
    RefusalReason.GPU_MODEL_NOT_ALLOWED: JobReason.LIMIT_EXCEEDED,
    RefusalReason.CURRENCY_MISMATCH: JobReason.NO_ELIGIBLE_CLUSTER,
    RefusalReason.NO_ELIGIBLE_OFFER: JobReason.NO_ELIGIBLE_CLUSTER,
    RefusalReason.NEVER_FITS: JobReason.NO_ELIGIBLE_CLUSTER,
    RefusalReason.CONCURRENT_GPUS_EXCEEDED: JobReason.LIMIT_EXCEEDED,
    RefusalReason.CONCURRENT_JOBS_EXCEEDED: JobReason.LIMIT_EXCEEDED,
    RefusalReason.INSUFFICIENT_BALANCE: JobReason.INSUFFICIENT_BALANCE,
    RefusalReason.RESERVATION_CONFLICT: JobReason.LIMIT_EXCEEDED,
    RefusalReason.JOB_CLOSED: JobReason.LIMIT_EXCEEDED,
    RefusalReason.LEDGER_FULL: JobReason.LIMIT_EXCEEDED,
    RefusalReason.PROGRAM_POOL_EXHAUSTED: JobReason.INSUFFICIENT_BALANCE,
    RefusalReason.COMPANY_CAP_EXCEEDED: JobReason.INSUFFICIENT_BALANCE,
    RefusalReason.CREDIT_LINE_EXCEEDED: JobReason.INSUFFICIENT_BALANCE,
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """One reason a voucher does not cover a job.

    Attributes:
        reason: what kind of limit refused, for programs.
        limit: JSON path of the voucher field (or the job field) that refused.
        message: a sentence for the tenant: the voucher, the limit and by how much.
    """

    reason: RefusalReason
    limit: str
    message: str

    @property
    def job_reason(self) -> JobReason:
        """The ComputeJob ``Reserved`` condition reason this refusal maps to."""
        return _JOB_REASONS[self.reason]

    def __str__(self) -> str:
        return self.message


def join_messages(refusals: Iterable[Refusal]) -> str:
    """All refusal messages as one text, in order, for an admission response.

    One refusal is its message; several are numbered, ``(1) ...; (2) ...``, since a message
    may itself contain a semicolon.
    """
    messages = [refusal.message for refusal in refusals]
    if len(messages) == 1:
        return messages[0]
    return "; ".join(f"({number}) {message}" for number, message in enumerate(messages, 1))
