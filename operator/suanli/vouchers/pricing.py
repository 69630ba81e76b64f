"""Pricing: a job's worst-case cost at admission and its actual charge when it ends.

Offers
    A :class:`PriceOffer` is one GPU model on one member cluster at its price per GPU-hour,
    built from MemberCluster specs by :func:`offers_from_members`. Offers are the whole input
    of pricing: no client, no cache.

Worst case
    A job may end up on any member that the job, its voucher and the members' state allow, so
    admission reserves ``replicas x gpusPerReplica x maxRuntime`` at the *highest* price among
    those offers (:func:`price_worst_case`). The eligible offers are narrowed step by step (the
    job's GPU models, the voucher's models, the job's clusters and regions, the voucher's
    clusters, the voucher's currency, cordons); when a step leaves nothing, the refusal names
    that step and what it removed, so the tenant learns which setting to change.

Rounding
    Money has two decimals. All arithmetic here is exact: prices are turned into whole cents
    and durations into whole microseconds, multiplied as integers, and divided once, so no
    decimal context precision is involved. Then:

    * a worst-case estimate is rounded *up* to the cent (``ROUND_CEILING``), so a reservation
      is never below the cost it guards against;
    * an actual charge is rounded *half up* to the cent (a bill of 0.005 is 0.01, of 0.0049 is
      0.00): the usual commercial rule, and at most half a cent from the exact cost, either way.

    Because the estimate rounds up and the charge rounds to nearest, a job that runs exactly
    ``maxRuntime`` at the worst-case price is charged at most its reservation.

GPU time
    :func:`gpu_seconds` counts whole seconds between start and end (a partial second is not
    billed) times the GPUs held. A reversed interval, as clock skew between the hub and a
    member can produce, counts as zero rather than failing the handler that meters it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

from suanli.api.catalogue import Accelerator, meets, member_catalogue, member_offer
from suanli.api.common import CENT, format_duration, format_money
from suanli.api.computejob import ComputeJobSpec
from suanli.api.membercluster import MemberCluster
from suanli.api.template_needs import (
    NOTHING_BEYOND_GPUS,
    MemberOffer,
    template_needs,
    unmet_need,
)
from suanli.api.voucherquota import VoucherQuota
from suanli.vouchers.keys import voucher_key
from suanli.vouchers.refusals import Refusal, RefusalReason

SECONDS_PER_HOUR: Final = 3600
_MICROSECONDS_PER_HOUR: Final = SECONDS_PER_HOUR * 1_000_000
# How many candidates a refusal message lists before it says "and N more".
_LIST_AT_MOST: Final = 8


@dataclass(frozen=True, slots=True)
class Installed:
    """The devices of one model installed on one member, node by node, as its nodes report
    them (schedulable or not): the largest gang the member could ever run."""

    per_node: tuple[tuple[int, int], ...] = ()
    """(devices on a node, number of such nodes)."""

    @property
    def total(self) -> int:
        return sum(size * nodes for size, nodes in self.per_node)

    @property
    def largest_node(self) -> int:
        return max((size for size, _ in self.per_node), default=0)

    def could_run(self, replicas: int, gpus_per_replica: int) -> bool:
        """Whether ``replicas`` pods of ``gpus_per_replica`` devices each fit on the nodes."""
        fitting = sum(nodes * (size // gpus_per_replica) for size, nodes in self.per_node)
        return fitting >= replicas


@dataclass(frozen=True, slots=True)
class PriceOffer:
    """One GPU model on one member cluster, at its price per GPU-hour.

    Attributes:
        cluster: the MemberCluster's name.
        region: the member's ``spec.region``.
        gpu_model: the GPU model priced.
        price_per_gpu_hour: the price of one GPU of that model for one hour (two decimals).
        currency: the member's ISO 4217 currency.
        cordoned: whether the member takes no new jobs.
        accelerator: the model's catalogue entry as the member declares it (None if unknown),
            for jobs that ask by capability.
        member: what the member offers a pod template besides GPUs.
        installed: the model's devices on the member's nodes; None while they are not known
            (the member's nodes not listed yet), which prices the offer as if a job fit.
    """

    cluster: str
    region: str
    gpu_model: str
    price_per_gpu_hour: Decimal
    currency: str
    cordoned: bool = False
    accelerator: Accelerator | None = None
    member: MemberOffer = NOTHING_BEYOND_GPUS
    installed: Installed | None = None

    def __str__(self) -> str:
        return f"{self.cluster}/{self.gpu_model}"


def offers_from_members(members: Iterable[MemberCluster]) -> list[PriceOffer]:
    """One offer per (member, priced GPU model), sorted by cluster then model.

    Members without a name (not yet stored objects) are skipped. A member's readiness is not
    considered: a job admitted while a member is briefly unreachable may still run there
    later, so its price must count towards the worst case. Cordons are kept on the offer and
    filtered by :func:`eligible_offers`, so that a refusal can say the members are cordoned.
    """
    offers = [
        PriceOffer(
            cluster=member.metadata.name,
            region=member.spec.region,
            gpu_model=price.gpu_model,
            price_per_gpu_hour=price.price_per_gpu_hour,
            currency=member.spec.currency,
            cordoned=member.spec.cordoned,
            accelerator=catalogue.get(price.gpu_model),
            member=offered,
        )
        for member in members
        if member.metadata.name
        for catalogue in (member_catalogue(member),)
        for offered in (member_offer(member, catalogue),)
        for price in member.spec.prices
    ]
    return sorted(offers, key=lambda offer: (offer.cluster, offer.gpu_model))


@dataclass(frozen=True, slots=True)
class WorstCase:
    """The priced worst case of a job.

    Attributes:
        offer: the highest-priced eligible offer, the price the estimate uses.
        gpus: GPUs the gang holds (``replicas x gpusPerReplica``).
        runtime: the job's ``maxRuntime``.
        amount: the estimate, rounded up to the cent, in ``offer.currency``.
        eligible: every offer the job could be placed at, sorted by cluster then model; the
            dispatcher must place the job only on these.
    """

    offer: PriceOffer
    gpus: int
    runtime: timedelta
    amount: Decimal
    eligible: tuple[PriceOffer, ...]

    @property
    def currency(self) -> str:
        """The currency of ``amount`` (the voucher's)."""
        return self.offer.currency

    def __str__(self) -> str:
        return (
            f"{format_money(self.amount)} {self.currency} ({self.gpus} GPUs x "
            f"{format_duration(self.runtime)} x {format_money(self.offer.price_per_gpu_hour)} "
            f"{self.currency}/GPU-hour on {self.offer})"
        )


# --- exact money arithmetic ---------------------------------------------------------------------


def _cents(price: Decimal) -> int:
    cents = price * 100
    if cents != cents.to_integral_value() or price < 0:
        raise ValueError(f"a price must be a non-negative amount with two decimals, got {price}")
    return int(cents)


def _from_cents(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


def worst_case_cost(gpus: int, runtime: timedelta, price_per_gpu_hour: Decimal) -> Decimal:
    """``gpus x runtime (hours) x price``, rounded up to the cent.

    >>> worst_case_cost(8, timedelta(hours=2), Decimal("200.00"))
    Decimal('3200.00')
    >>> worst_case_cost(1, timedelta(seconds=1), Decimal("10.00"))  # 0.00277... rounds up
    Decimal('0.01')

    Raises:
        ValueError: negative GPUs or runtime, or a price with more than two decimals.
    """
    if gpus < 0 or runtime < timedelta(0):
        raise ValueError(f"GPUs and runtime must not be negative, got {gpus} and {runtime}")
    microseconds = runtime // timedelta(microseconds=1)
    numerator = gpus * microseconds * _cents(price_per_gpu_hour)
    return _from_cents(-(-numerator // _MICROSECONDS_PER_HOUR))


def price_cap(hold: Decimal, gpus: int, runtime: timedelta) -> Decimal | None:
    """The highest price per GPU-hour whose worst case fits in ``hold``; None if any does.

    The exact inverse of :func:`worst_case_cost`: a price ``p`` has
    ``worst_case_cost(gpus, runtime, p) <= hold`` exactly when ``p <= price_cap(...)``, so a
    hold priced at admission covers every placement at or below its cap and none above.

    >>> price_cap(Decimal("3200.00"), 8, timedelta(hours=2))
    Decimal('200.00')
    """
    microseconds = gpus * (runtime // timedelta(microseconds=1))
    if microseconds <= 0:
        return None
    return _from_cents(_cents(hold) * _MICROSECONDS_PER_HOUR // microseconds)


def charge_for(gpu_seconds: int, price_per_gpu_hour: Decimal) -> Decimal:
    """What ``gpu_seconds`` cost at ``price_per_gpu_hour``, rounded half up to the cent.

    >>> charge_for(3600, Decimal("12.50"))
    Decimal('12.50')
    >>> charge_for(1, Decimal("18.00"))  # 0.005 exactly: half up
    Decimal('0.01')

    Raises:
        ValueError: negative GPU-seconds, or a price with more than two decimals.
    """
    if gpu_seconds < 0:
        raise ValueError(f"GPU-seconds must not be negative, got {gpu_seconds}")
    numerator = gpu_seconds * _cents(price_per_gpu_hour)
    # floor(n / d + 1/2) == floor((2n + d) / 2d): half up, in integers.
    return _from_cents((2 * numerator + SECONDS_PER_HOUR) // (2 * SECONDS_PER_HOUR))


def gpu_seconds(start: datetime, end: datetime, gpus: int) -> int:
    """GPU time between ``start`` and ``end`` with ``gpus`` GPUs held: whole seconds x GPUs.

    A partial second is not counted; an ``end`` before ``start`` counts as zero.

    Raises:
        ValueError: negative GPUs.
    """
    if gpus < 0:
        raise ValueError(f"GPUs must not be negative, got {gpus}")
    seconds = max(0, (end - start) // timedelta(seconds=1))
    return seconds * gpus


# --- eligibility --------------------------------------------------------------------------------


def _described(offer: PriceOffer) -> str:
    """A model with its figures, for a refusal: ``L40S (362 TFLOPS, 48 GiB)``."""
    entry = offer.accelerator
    if entry is None:
        return f"{offer.gpu_model} (not in the accelerator catalogue)"
    tflops = "no known TFLOPS" if entry.fp16_tflops is None else f"{entry.fp16_tflops} TFLOPS"
    return f"{offer.gpu_model} ({entry.vendor}, {tflops}, {entry.memory_gib} GiB)"


def _names(values: Iterable[str]) -> str:
    ordered = sorted(set(values))
    shown = ", ".join(ordered[:_LIST_AT_MOST])
    hidden = len(ordered) - _LIST_AT_MOST
    return f"{shown} and {hidden} more" if hidden > 0 else shown


@dataclass(frozen=True, slots=True)
class _Step:
    """One narrowing of the candidate offers, and how to explain it emptying the set."""

    keep: Callable[[PriceOffer], bool]
    reason: RefusalReason
    limit: str
    explain: Callable[[Sequence[PriceOffer]], str]


def _steps(job: ComputeJobSpec, voucher: VoucherQuota) -> list[_Step]:
    spec = voucher.spec
    steps: list[_Step] = []
    if job.gpu_models:
        accepted = set(job.gpu_models)
        steps.append(
            _Step(
                lambda offer: offer.gpu_model in accepted,
                RefusalReason.NO_ELIGIBLE_OFFER,
                "ComputeJob:spec.gpuModels",
                lambda left: (
                    f"no member offers the GPU models the job accepts "
                    f"({_names(accepted)}, spec.gpuModels); members offer "
                    f"{_names(o.gpu_model for o in left)}"
                ),
            )
        )
    capability = job.capability
    if capability is not None and not capability.empty:
        vendors = frozenset(v.value for v in capability.vendors)
        steps.append(
            _Step(
                lambda offer: meets(
                    offer.accelerator,
                    min_fp16_tflops=capability.min_fp16_tflops,
                    min_memory_gib=capability.min_memory_gib,
                    vendors=vendors,
                ),
                RefusalReason.NO_ELIGIBLE_OFFER,
                "ComputeJob:spec.capability",
                lambda left: (
                    "no member offers a device as capable as the job asks (spec.capability); "
                    f"members offer {_names(_described(o) for o in left)}"
                ),
            )
        )
    if spec.allowed_gpu_models:
        allowed = set(spec.allowed_gpu_models)
        steps.append(
            _Step(
                lambda offer: offer.gpu_model in allowed,
                RefusalReason.NO_ELIGIBLE_OFFER,
                "spec.allowedGPUModels",
                lambda left: (
                    f"no member offers a GPU model the voucher pays for "
                    f"({_names(allowed)}, spec.allowedGPUModels) among those the job could use "
                    f"({_names(o.gpu_model for o in left)})"
                ),
            )
        )
    if job.placement.clusters:
        clusters = set(job.placement.clusters)
        steps.append(
            _Step(
                lambda offer: offer.cluster in clusters,
                RefusalReason.NO_ELIGIBLE_OFFER,
                "ComputeJob:spec.placement.clusters",
                lambda left: (
                    f"none of the members offering those models "
                    f"({_names(o.cluster for o in left)}) is among the job's "
                    f"spec.placement.clusters ({_names(clusters)})"
                ),
            )
        )
    if job.placement.regions:
        regions = set(job.placement.regions)
        steps.append(
            _Step(
                lambda offer: offer.region in regions,
                RefusalReason.NO_ELIGIBLE_OFFER,
                "ComputeJob:spec.placement.regions",
                lambda left: (
                    f"the members that qualify ({_names(o.cluster for o in left)}) are "
                    f"in regions {_names(o.region for o in left)}, not in the job's "
                    f"spec.placement.regions ({_names(regions)})"
                ),
            )
        )
    if spec.allowed_clusters:
        allowed_clusters = set(spec.allowed_clusters)
        steps.append(
            _Step(
                lambda offer: offer.cluster in allowed_clusters,
                RefusalReason.NO_ELIGIBLE_OFFER,
                "spec.allowedClusters",
                lambda left: (
                    f"the members that qualify ({_names(o.cluster for o in left)}) are "
                    f"not among the voucher's spec.allowedClusters ({_names(allowed_clusters)})"
                ),
            )
        )
    steps.append(
        _Step(
            lambda offer: offer.currency == spec.currency,
            RefusalReason.CURRENCY_MISMATCH,
            "spec.currency",
            lambda left: (
                f"the members that qualify ({_names(o.cluster for o in left)}) price in "
                f"{_names(o.currency for o in left)}, not in the voucher's currency {spec.currency}"
            ),
        )
    )
    steps.append(
        _Step(
            lambda offer: not offer.cordoned,
            RefusalReason.NO_ELIGIBLE_OFFER,
            "MemberCluster:spec.cordoned",
            lambda left: (
                f"the members that qualify ({_names(o.cluster for o in left)}) are "
                "cordoned and take no new jobs"
            ),
        )
    )
    needs = template_needs(job.template)
    if not needs.empty:
        steps.append(
            _Step(
                lambda offer: unmet_need(needs, offer.member) is None,
                RefusalReason.NO_ELIGIBLE_OFFER,
                "ComputeJob:spec.template",
                lambda left: (
                    "no member the job may use runs its template: "
                    + "; ".join(
                        f"{cluster}: {unmet_need(needs, member)}"
                        for cluster, member in sorted({(o.cluster, o.member) for o in left})[
                            :_LIST_AT_MOST
                        ]
                    )
                ),
            )
        )
    replicas, per_replica = job.replicas, job.gpus_per_replica
    steps.append(
        _Step(
            lambda offer: (
                offer.installed is None or offer.installed.could_run(replicas, per_replica)
            ),
            RefusalReason.NEVER_FITS,
            "ComputeJob:spec.gpusPerReplica",
            lambda left: (
                f"spec.gpusPerReplica: {replicas} replica(s) of {per_replica} devices fit on no "
                "member the job may use, even with all their devices free (each replica runs "
                "on one node): "
                + ", ".join(f"{o} has {_installed(o.installed)}" for o in left[:_LIST_AT_MOST])
            ),
        )
    )
    return steps


def _installed(installed: Installed | None) -> str:
    if installed is None or not installed.per_node:
        return "no nodes"
    return f"{installed.total} in all, at most {installed.largest_node} on a node"


def eligible_offers(
    offers: Iterable[PriceOffer], job: ComputeJobSpec, voucher: VoucherQuota
) -> tuple[PriceOffer, ...] | Refusal:
    """The offers the job may be placed at under ``voucher``, or why there are none.

    An offer is eligible when its GPU model is accepted by the job (``spec.gpuModels``, empty
    for any), meets the job's ``spec.capability`` (if set) and is allowed by the voucher
    (``spec.allowedGPUModels``, empty for any), its cluster
    is in the job's ``placement.clusters`` and the voucher's ``allowedClusters`` (each empty
    for any), its region in the job's ``placement.regions`` (empty for any), its currency is
    the voucher's, its member is not cordoned, runs what the template asks besides GPUs
    (:func:`~suanli.api.template_needs.unmet_need`) and has nodes the gang could ever fit on.
    """
    left = tuple(offers)
    name = voucher_key(voucher)
    if not left:
        return Refusal(
            RefusalReason.NO_ELIGIBLE_OFFER,
            "MemberCluster:spec.prices",
            f"voucher {name} cannot price this job: no member cluster offers any priced GPU",
        )
    for step in _steps(job, voucher):
        kept = tuple(offer for offer in left if step.keep(offer))
        if not kept:
            return Refusal(
                step.reason,
                step.limit,
                f"voucher {name} cannot price this job: {step.explain(left)}",
            )
        left = kept
    return left


def price_worst_case(
    offers: Iterable[PriceOffer], job: ComputeJobSpec, voucher: VoucherQuota
) -> WorstCase | Refusal:
    """The job's worst-case cost under ``voucher``, or why it cannot be priced.

    The price is the highest among :func:`eligible_offers` (ties broken by cluster then model,
    so the answer is deterministic); the amount is :func:`worst_case_cost` of the job's GPUs
    and ``maxRuntime`` at that price.
    """
    eligible = eligible_offers(offers, job, voucher)
    if isinstance(eligible, Refusal):
        return eligible
    top = max(
        eligible, key=lambda offer: (offer.price_per_gpu_hour, offer.cluster, offer.gpu_model)
    )
    amount = worst_case_cost(job.total_gpus, job.max_runtime, top.price_per_gpu_hour)
    return WorstCase(
        offer=top,
        gpus=job.total_gpus,
        runtime=job.max_runtime,
        amount=amount.quantize(CENT),
        eligible=eligible,
    )
