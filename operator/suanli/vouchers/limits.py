"""Admission: does a voucher cover a new job? Every limit, one typed decision.

:func:`evaluate` is what the validating webhook asks for each ComputeJob create. It checks, in
this order, and reports every limit that fails (not only the first), so the tenant can fix
them all at once:

1. the validity window (``validFrom`` <= now < ``validUntil``);
2. ``limits.maxGPUsPerJob`` against ``replicas x gpusPerReplica``;
3. ``limits.maxRuntime`` against the job's ``maxRuntime``;
4. ``allowedGPUModels``: every model the job lists must be allowed (a job that lists an
   excluded model is refused naming it, rather than silently never running on it);
5. ``allowedClusters``: a job that names clusters must name at least one allowed cluster
   (the others are simply not used, as for an unpriced member);
6. pricing (:func:`~suanli.vouchers.pricing.price_worst_case`): some uncordoned member must
   offer an accepted model, in the voucher's currency, where job and voucher allow; skipped
   when 4 or 5 failed, which already say the same thing more precisely;
7. against the ledger (:meth:`~suanli.vouchers.ledger.Ledger.check_reserve`), when the job
   could be priced: ``limits.maxConcurrentJobs``, ``limits.maxConcurrentGPUs`` and the
   balance (``reserved + spent + worst case <= amount + creditLine``).

An :class:`Allowed` decision carries the :class:`~suanli.vouchers.ledger.ReservationRequest`
to commit; checks 1 to 6 depend only on the job, the voucher's spec, the members and ``now``,
while 7 depends on the ledger and must be decided again at commit time
(:meth:`~suanli.vouchers.book.VoucherBook.admit`), against the ledger as it is then. A dry-run
request stops after :func:`evaluate`: it reserves nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from suanli.api.common import format_duration, format_timestamp
from suanli.api.computejob import ComputeJob
from suanli.api.voucherquota import VoucherQuota
from suanli.vouchers.keys import job_key, voucher_key
from suanli.vouchers.ledger import Ledger, ReservationRequest, VoucherTerms
from suanli.vouchers.pricing import PriceOffer, WorstCase, price_worst_case
from suanli.vouchers.refusals import Refusal, RefusalReason, join_messages


@dataclass(frozen=True, slots=True)
class Allowed:
    """The voucher covers the job; ``request`` is the hold to commit.

    Attributes:
        request: the reservation to commit (job key, worst-case amount, GPUs, ``now``).
        worst_case: how the amount was priced, and the offers the job may be placed at.
    """

    request: ReservationRequest
    worst_case: WorstCase

    @property
    def allowed(self) -> bool:
        """True: the job may be admitted."""
        return True

    @property
    def amount(self) -> Decimal:
        """The worst-case amount to reserve."""
        return self.request.amount


@dataclass(frozen=True, slots=True)
class Refused:
    """The voucher does not cover the job; ``refusals`` say every limit that failed."""

    refusals: tuple[Refusal, ...]

    @property
    def allowed(self) -> bool:
        """False: the job must be denied."""
        return False

    @property
    def reason(self) -> RefusalReason:
        """The first refusal's reason, for the condition and metrics."""
        return self.refusals[0].reason

    @property
    def message(self) -> str:
        """Every refusal message, for the admission response."""
        return join_messages(self.refusals)


Decision = Allowed | Refused
"""What :func:`evaluate` answers."""


def check_voucher_limits(job: ComputeJob, voucher: VoucherQuota, now: datetime) -> list[Refusal]:
    """Checks 1 to 5 of the module docs: the limits that need only the job and the voucher."""
    name = voucher_key(voucher)
    spec = voucher.spec
    limits = spec.limits
    job_spec = job.spec
    refusals: list[Refusal] = []

    if spec.valid_from is not None and now < spec.valid_from:
        refusals.append(
            Refusal(
                RefusalReason.NOT_YET_VALID,
                "spec.validFrom",
                f"voucher {name} is not valid until {format_timestamp(spec.valid_from)} "
                f"(spec.validFrom), {_span(spec.valid_from - now)} from now",
            )
        )
    if now >= spec.valid_until:
        refusals.append(
            Refusal(
                RefusalReason.EXPIRED,
                "spec.validUntil",
                f"voucher {name} expired at {format_timestamp(spec.valid_until)} "
                f"(spec.validUntil), {_span(now - spec.valid_until)} ago; it admits no new jobs",
            )
        )

    cap = limits.max_gpus_per_job
    gpus = job_spec.total_gpus
    if cap is not None and gpus > cap:
        refusals.append(
            Refusal(
                RefusalReason.TOO_MANY_GPUS_PER_JOB,
                "spec.limits.maxGPUsPerJob",
                f"voucher {name} allows at most {cap} GPUs per job (spec.limits.maxGPUsPerJob); "
                f"this job asks for {gpus} ({job_spec.replicas} replicas x "
                f"{job_spec.gpus_per_replica} GPUs): {gpus - cap} over",
            )
        )

    runtime_cap = limits.max_runtime
    if runtime_cap is not None and job_spec.max_runtime > runtime_cap:
        refusals.append(
            Refusal(
                RefusalReason.RUNTIME_TOO_LONG,
                "spec.limits.maxRuntime",
                f"voucher {name} allows a maxRuntime of at most {format_duration(runtime_cap)} "
                f"(spec.limits.maxRuntime); this job asks for "
                f"{format_duration(job_spec.max_runtime)}: "
                f"{_span(job_spec.max_runtime - runtime_cap)} over",
            )
        )

    if spec.allowed_gpu_models:
        excluded = [m for m in job_spec.gpu_models if m not in spec.allowed_gpu_models]
        if excluded:
            refusals.append(
                Refusal(
                    RefusalReason.GPU_MODEL_NOT_ALLOWED,
                    "spec.allowedGPUModels",
                    f"voucher {name} does not pay for GPU model"
                    f"{'s' if len(excluded) > 1 else ''} {', '.join(excluded)} "
                    f"(spec.allowedGPUModels: {', '.join(spec.allowed_gpu_models)}); remove "
                    f"{'them' if len(excluded) > 1 else 'it'} from the job's spec.gpuModels",
                )
            )

    wanted = job_spec.placement.clusters
    if spec.allowed_clusters and wanted and not set(wanted) & set(spec.allowed_clusters):
        refusals.append(
            Refusal(
                RefusalReason.CLUSTER_NOT_ALLOWED,
                "spec.allowedClusters",
                f"voucher {name} pays only for clusters {', '.join(spec.allowed_clusters)} "
                f"(spec.allowedClusters); the job's spec.placement.clusters "
                f"({', '.join(wanted)}) names none of them",
            )
        )
    return refusals


def _priced(
    job: ComputeJob, voucher: VoucherQuota, offers: Iterable[PriceOffer], now: datetime
) -> tuple[list[Refusal], Allowed | None]:
    """Checks 1 to 6: the refusals so far, and the hold when the job could be priced."""
    uid = job.metadata.uid
    if not uid:
        raise ValueError(f"ComputeJob {job_key(job)} has no uid to key its hold by")
    refusals = check_voucher_limits(job, voucher, now)
    overlapping = {RefusalReason.GPU_MODEL_NOT_ALLOWED, RefusalReason.CLUSTER_NOT_ALLOWED}
    if any(refusal.reason in overlapping for refusal in refusals):
        return refusals, None
    priced = price_worst_case(offers, job.spec, voucher)
    if isinstance(priced, Refusal):
        return [*refusals, priced], None
    request = ReservationRequest(uid, job_key(job), priced.amount, priced.gpus, now)
    return refusals, Allowed(request, priced)


def quote(
    job: ComputeJob, voucher: VoucherQuota, offers: Iterable[PriceOffer], now: datetime
) -> Decision:
    """The hold ``job`` would take on ``voucher`` (checks 1 to 6), without the ledger.

    What the mutating webhook writes into the job's hold annotation; the validating webhook
    then decides the same job with :func:`evaluate`, which adds check 7.

    Raises:
        ValueError: the job has no namespace, name or uid.
    """
    refusals, allowed = _priced(job, voucher, offers, now)
    if refusals or allowed is None:
        return Refused(tuple(refusals))
    return allowed


def evaluate(
    job: ComputeJob,
    voucher: VoucherQuota,
    offers: Iterable[PriceOffer],
    ledger: Ledger,
    now: datetime,
) -> Decision:
    """Whether ``voucher`` covers ``job`` now, with every failing limit; see the module docs.

    ``ledger`` is the voucher's state as last read; its terms are refreshed from ``voucher``'s
    spec, so a ledger restored before an edit of the voucher is judged by the current terms.

    Raises:
        ValueError: the job has no namespace, name or uid (its ledger entry is keyed by uid:
            the validating webhook sees the uid the job will be stored with).
    """
    refusals, allowed = _priced(job, voucher, offers, now)
    if allowed is None:
        return Refused(tuple(refusals))
    ledger = ledger.with_terms(VoucherTerms.from_voucher(voucher))
    refusals += ledger.check_reserve(allowed.request)
    if refusals:
        return Refused(tuple(refusals))
    return allowed


def _span(delta: timedelta) -> str:
    """A time span in the duration notation, whole seconds rounded up (``1h30m``)."""
    return format_duration(max(0, -(-delta // timedelta(seconds=1))))
