"""Placement policy: which member cluster, which GPU model, which nodes; and why not the others.

:func:`decide` looks at every member cluster the index knows and either chooses one or says,
per cluster, why not, in words meant for the tenant reading ``kubectl describe``.

Filters, in the order a reason is reported (the first that fails is the cluster's reason):

1. the job's own preferences: ``spec.placement.clusters`` and ``spec.placement.regions``;
2. the voucher's terms: its allowed clusters and its currency (prices must be in it);
3. the member's Pod Security level: a job whose template does not meet the level the member
   requires (``restricted``, say) never goes there, and the message names the first field
   that falls short; nor does a job whose template asks for an extended resource or inline
   CSI driver the member does not offer, or for one of its accelerator resources
   (:func:`~suanli.api.template_needs.unmet_need`, the rule admission's pricing applies too);
4. the member's state: Ready, not cordoned;
5. the GPU model: one the job accepts (empty: any) and the voucher allows (empty: any), whose
   devices meet the job's capability request (``spec.capability``: FP16 TFLOPS, memory,
   vendors, per the member's accelerator catalogue), that the member has and prices, at a
   price the job's hold covers (a price raised after admission
   would otherwise charge more than was reserved: the excess is never placed, not capped);
6. fit, per model: every replica of ``gpusPerReplica`` GPUs on one node and the whole gang in
   this one cluster. A gang that could not fit even with every GPU free is a permanent "too
   small"; one that could later is "no capacity" and waits. A (cluster, model) the queue holds
   back for an older job (see :mod:`suanli.dispatch.queue`) is "held".

Score, among the (cluster, model) pairs that fit now: ``Cheapest`` (the default) ranks by price
per GPU-hour, then headroom (free GPUs of that model in the cluster, more first), then telemetry
health (the share of its nodes with fresh telemetry, since a figure the exporters confirm beats
one only Kubernetes vouches for), then name for a stable result. ``MostHeadroom`` swaps the
first two. For a job that asks by capability, Cheapest ranks by price per PFLOPS-hour delivered
(price per device-hour over the device's dense FP16 PFLOPS), so a dearer but much faster device
can win. The gang's nodes are then chosen best fit (:meth:`CapacityIndex.allocate`).

Nothing is recorded: the caller assumes the chosen allocation in the index
(:meth:`CapacityIndex.assume`) before it awaits anything.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from typing import Final, NamedTuple

from suanli.api.common import format_money
from suanli.api.computejob import PlacementPolicy
from suanli.api.reasons import JobReason
from suanli.api.template_needs import unmet_need
from suanli.dispatch.capacity import CapacityIndex, ModelCapacity
from suanli.dispatch.models import ClusterInfo, JobRequest

DEFAULT_SUMMARY_LIMIT: Final = 8

Pair = tuple[str, str]
"""(cluster, model)."""


class Rejection(StrEnum):
    """Why a cluster was not chosen; programs match these, people read the message."""

    NOT_IN_JOB_CLUSTERS = "NotInJobClusters"
    REGION_NOT_ALLOWED = "RegionNotAllowed"
    NOT_ALLOWED_BY_VOUCHER = "NotAllowedByVoucher"
    CURRENCY_MISMATCH = "CurrencyMismatch"
    POD_SECURITY_LEVEL = "PodSecurityLevel"
    TEMPLATE_NOT_RUN = "TemplateNotRun"
    NOT_READY = "NotReady"
    CORDONED = "Cordoned"
    NO_ACCEPTED_MODEL = "NoAcceptedModel"
    NO_CAPABLE_MODEL = "NoCapableModel"
    NOT_PRICED = "NotPriced"
    PRICE_ABOVE_HOLD = "PriceAboveHold"
    TOO_SMALL = "TooSmall"
    NO_CAPACITY = "NoCapacity"
    HELD_FOR_QUEUED_JOB = "HeldForQueuedJob"
    NOT_CHOSEN = "NotChosen"

    @property
    def transient(self) -> bool:
        """Whether freed capacity alone could change the verdict."""
        return self in _TRANSIENT


_TRANSIENT: Final = frozenset(
    {Rejection.NO_CAPACITY, Rejection.HELD_FOR_QUEUED_JOB, Rejection.NOT_CHOSEN}
)
_SHORT: Final = {
    Rejection.NOT_IN_JOB_CLUSTERS: "not in spec.placement.clusters",
    Rejection.REGION_NOT_ALLOWED: "region not allowed",
    Rejection.NOT_ALLOWED_BY_VOUCHER: "not allowed by the voucher",
    Rejection.CURRENCY_MISMATCH: "other currency",
    Rejection.POD_SECURITY_LEVEL: "template below its Pod Security level",
    Rejection.TEMPLATE_NOT_RUN: "does not run what the template asks besides GPUs",
    Rejection.NOT_READY: "not Ready",
    Rejection.CORDONED: "cordoned",
    Rejection.NO_ACCEPTED_MODEL: "no accepted GPU model",
    Rejection.NO_CAPABLE_MODEL: "no device as capable as asked",
    Rejection.NOT_PRICED: "model not priced",
    Rejection.PRICE_ABOVE_HOLD: "priced above what the job's hold covers",
    Rejection.TOO_SMALL: "too small for the job",
    Rejection.NO_CAPACITY: "not enough free GPUs",
    Rejection.HELD_FOR_QUEUED_JOB: "held for a queued job",
    Rejection.NOT_CHOSEN: "fit but ranked lower",
}


@dataclass(frozen=True)
class ClusterReason:
    """Why one cluster was not chosen."""

    cluster: str
    rejection: Rejection
    message: str
    """Starts with the cluster's name: ``member-b: no H100``."""

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class NodeAllocation:
    node: str
    replicas: int
    gpus: int


@dataclass(frozen=True)
class Choice:
    """The chosen placement."""

    cluster: str
    model: str
    price_per_gpu_hour: Decimal
    currency: str
    allocations: tuple[NodeAllocation, ...]
    free: int
    """Free GPUs of the model in the cluster before this placement."""
    nodes: int
    fresh_nodes: int
    """Nodes of the model with fresh telemetry; the others were judged by Kubernetes' view."""
    price_per_pflops_hour: Decimal | None = None
    """The price per PFLOPS-hour delivered, for a job that asks by capability."""
    fp16_tflops: int | None = None
    """One device's dense FP16 TFLOPS, from the member's catalogue."""

    @property
    def gpus_by_node(self) -> dict[str, int]:
        """What :meth:`CapacityIndex.assume` takes."""
        return {a.node: a.gpus for a in self.allocations}

    @property
    def pair(self) -> Pair:
        return (self.cluster, self.model)


class _Candidate(NamedTuple):
    """A cluster's best model that fits now; tuples compare by rank, which is unique."""

    rank: tuple[Decimal | int | float | str, ...]
    info: ClusterInfo
    capacity: ModelCapacity
    price: Decimal


class _Rejected(NamedTuple):
    """A cluster that does not fit, before its message is written (most are never read)."""

    code: Rejection
    info: ClusterInfo
    models: Mapping[str, ModelCapacity]


@dataclass(frozen=True)
class _Context:
    """What it takes to write any cluster's reason later."""

    job: JobRequest
    accepted: frozenset[str] | None
    held: Mapping[Pair, str]
    best: _Candidate | None


@dataclass(frozen=True)
class Decision:
    """The outcome of :func:`decide` for one job.

    It keeps what it needs to write every cluster's reason on demand (a few dozen bytes per
    cluster); keep the summary rather than the decision when it is to live long.
    """

    job: str
    choice: Choice | None
    reason: JobReason
    """Placed, NoCapacity (may fit once GPUs free) or NoEligibleCluster (will not, as things
    are: no cluster passes the static filters)."""
    summary: str
    """One line for a condition message or an event."""
    waiting_on: frozenset[Pair] = frozenset()
    """(cluster, model) pairs the job passes every filter but fit on: it waits for these."""
    _context: _Context | None = field(default=None, repr=False, compare=False)
    _others: tuple[_Candidate, ...] = field(default=(), repr=False, compare=False)
    _rejected: tuple[_Rejected, ...] = field(default=(), repr=False, compare=False)

    @property
    def placed(self) -> bool:
        return self.choice is not None

    @cached_property
    def rejections(self) -> Mapping[str, Rejection]:
        """The code of every cluster not chosen, by name."""
        codes = {c.info.name: Rejection.NOT_CHOSEN for c in self._others}
        codes.update((r.info.name, r.code) for r in self._rejected)
        return codes

    @cached_property
    def reasons(self) -> tuple[ClusterReason, ...]:
        """Every cluster not chosen: those that fit first (by rank), then those short of free
        GPUs, then the rest, each group by name. Written on first access."""
        context = self._context
        if context is None:
            return ()
        others = [
            ClusterReason(c.info.name, Rejection.NOT_CHOSEN, _render_other(context, c))
            for c in sorted(self._others)
        ]
        rest = [
            ClusterReason(r.info.name, r.code, _render(context, r))
            for r in sorted(self._rejected, key=_rest_order)
        ]
        return tuple(others + rest)


def never_placed(job: JobRequest, index: CapacityIndex) -> bool:
    """Whether no member registered now could ever take ``job`` as it stands: each rejects it
    for a lasting reason (not for capacity, readiness or a cordon). With no member at all the
    answer is no: one may join."""
    decision = decide(job, index)
    codes = decision.rejections
    return decision.choice is None and bool(codes) and all(c in _LASTING for c in codes.values())


def decide(
    job: JobRequest,
    index: CapacityIndex,
    *,
    held: Mapping[Pair, str] | None = None,
    summary_limit: int = DEFAULT_SUMMARY_LIMIT,
) -> Decision:
    """Choose where ``job`` runs now, or say why it cannot, cluster by cluster.

    Every cluster is judged from the index's per-model aggregates, so the cost grows with the
    number of clusters and models, not nodes; only the chosen cluster's nodes are scanned.
    Messages are written only for the summary's clusters; :attr:`Decision.reasons` writes the
    rest when read.

    Args:
        job: The job.
        index: Live capacity; read, not changed.
        held: (cluster, model) pairs reserved for older queued jobs, with the name of the job
            each is held for; the queue passes these (see :mod:`suanli.dispatch.queue`).
        summary_limit: How many clusters the summary names before it counts the rest.
    """
    # A copy: reasons are written later, and the queue's held pairs grow during a drain.
    held = dict(held) if held else {}
    accepted = _accepted_models(job)
    candidates: list[_Candidate] = []
    rejected: list[_Rejected] = []
    waiting: set[Pair] = set()
    for info, models in index.survey():
        code = _static_code(job, info)
        if code is None:
            if accepted is not None and not accepted:
                code = Rejection.NO_ACCEPTED_MODEL
            else:
                code = _assess(
                    job, info, models, accepted, held=held, waiting=waiting, candidates=candidates
                )
                if code is None:
                    continue
        rejected.append(_Rejected(code, info, models))
    choice: Choice | None = None
    best: _Candidate | None = None
    if candidates:
        best = min(candidates)
        choice = _allocate(job, best, index)
        if choice is None:  # cannot happen while aggregates and nodes agree; stay safe
            for best in sorted(candidates):
                choice = _allocate(job, best, index)
                if choice is not None:
                    break
    others = [c for c in candidates if c is not best] if choice is not None else candidates
    context = _Context(job, accepted, held, best if choice is not None else None)
    return _decision(context, choice, others, rejected, waiting=waiting, limit=summary_limit)


def _accepted_models(job: JobRequest) -> frozenset[str] | None:
    """Models both the job and its voucher allow; None means any."""
    allowed = job.voucher.allowed_models if job.voucher is not None else frozenset()
    if job.gpu_models and allowed:
        return job.gpu_models & allowed
    return job.gpu_models or allowed or None


def _static_code(job: JobRequest, info: ClusterInfo) -> Rejection | None:
    """The first filter that does not depend on GPUs and that the cluster fails."""
    name = info.name
    voucher = job.voucher
    failed = (
        (bool(job.clusters) and name not in job.clusters, Rejection.NOT_IN_JOB_CLUSTERS),
        (bool(job.regions) and info.region not in job.regions, Rejection.REGION_NOT_ALLOWED),
        (
            voucher is not None
            and bool(voucher.allowed_clusters)
            and name not in voucher.allowed_clusters,
            Rejection.NOT_ALLOWED_BY_VOUCHER,
        ),
        (voucher is not None and voucher.currency != info.currency, Rejection.CURRENCY_MISMATCH),
        (job.shortfall(info.pod_security_level) is not None, Rejection.POD_SECURITY_LEVEL),
        (unmet_need(job.needs, info.offer) is not None, Rejection.TEMPLATE_NOT_RUN),
        (not info.ready, Rejection.NOT_READY),
        (info.cordoned, Rejection.CORDONED),
    )
    return next((code for fails, code in failed if fails), None)


def _static_message(code: Rejection, job: JobRequest, info: ClusterInfo) -> str:
    voucher = job.voucher.name if job.voucher is not None else ""
    paying = job.voucher.currency if job.voucher is not None else ""
    detail = f" ({info.not_ready_message})" if info.not_ready_message else ""
    text = {
        Rejection.NOT_IN_JOB_CLUSTERS: "not in spec.placement.clusters",
        Rejection.REGION_NOT_ALLOWED: f"region {info.region} not in spec.placement.regions",
        Rejection.NOT_ALLOWED_BY_VOUCHER: f"not allowed by voucher {voucher}",
        Rejection.CURRENCY_MISMATCH: f"prices in {info.currency}, voucher {voucher} pays in "
        f"{paying}",
        Rejection.POD_SECURITY_LEVEL: f"requires Pod Security level {info.pod_security_level}, "
        f"which the template does not meet: {job.shortfall(info.pod_security_level)}",
        Rejection.TEMPLATE_NOT_RUN: f"{unmet_need(job.needs, info.offer)}",
        Rejection.NOT_READY: f"not Ready{detail}",
        Rejection.CORDONED: "cordoned",
    }[code]
    return f"{info.name}: {text}"


def _considered(models: Mapping[str, ModelCapacity], accepted: frozenset[str] | None) -> list[str]:
    considered = [m for m in models if accepted is None or m in accepted]
    if len(considered) > 1:
        considered.sort()
    return considered


def _verdict(
    job: JobRequest,
    cluster: str,
    capacity: ModelCapacity,
    price: Decimal | None,
    held: Mapping[Pair, str],
) -> Rejection | None:
    """Whether the gang fits on this cluster's GPUs of one model now; None if it does."""
    if price is None:
        return Rejection.NOT_PRICED
    if job.price_cap is not None and price > job.price_cap:
        return Rejection.PRICE_ABOVE_HOLD
    g, replicas = job.gpus_per_replica, job.replicas
    total = g * replicas
    if capacity.allocatable < total or capacity.replicas_that_could_ever_fit(g) < replicas:
        return Rejection.TOO_SMALL
    if held and (cluster, capacity.model) in held:
        return Rejection.HELD_FOR_QUEUED_JOB
    if capacity.free < total or capacity.replicas_that_fit(g) < replicas:
        return Rejection.NO_CAPACITY
    return None


# Which model's verdict speaks for a cluster where none fits: one that may free up first.
_PRECEDENCE: Final = {
    Rejection.NO_CAPACITY: 0,
    Rejection.HELD_FOR_QUEUED_JOB: 1,
    Rejection.TOO_SMALL: 2,
    Rejection.PRICE_ABOVE_HOLD: 3,
    Rejection.NOT_PRICED: 4,
}


def _assess(
    job: JobRequest,
    info: ClusterInfo,
    models: Mapping[str, ModelCapacity],
    accepted: frozenset[str] | None,
    *,
    held: Mapping[Pair, str],
    waiting: set[Pair],
    candidates: list[_Candidate],
) -> Rejection | None:
    """Add the cluster's best model that fits now to ``candidates``; if none does, say why."""
    name = info.name
    best: _Candidate | None = None
    verdict: Rejection | None = None
    incapable = False
    for model, capacity in models.items():
        if accepted is not None and model not in accepted:
            continue
        if not _capable(job, info, model):
            incapable = True
            continue
        price = info.prices.get(model)
        code = _verdict(job, name, capacity, price, held)
        if code is None and price is not None:
            candidate = _Candidate(_rank(job, info, capacity, price), info, capacity, price)
            if best is None or candidate.rank < best.rank:
                best = candidate
        elif code is not None:
            if code in _TRANSIENT:
                waiting.add((name, model))
            if verdict is None or _PRECEDENCE[code] < _PRECEDENCE[verdict]:
                verdict = code
    if best is not None:
        candidates.append(best)  # the cluster's best model speaks for it
        return None
    if verdict is None:
        return Rejection.NO_CAPABLE_MODEL if incapable else Rejection.NO_ACCEPTED_MODEL
    return verdict


def _capable(job: JobRequest, info: ClusterInfo, model: str) -> bool:
    """Whether the member's devices of ``model`` meet the job's capability request."""
    return job.capability is None or job.capability.met_by(info.catalogue.get(model))


def price_per_pflops_hour(info: ClusterInfo, model: str, price: Decimal) -> Decimal | None:
    """A device-hour's price over the device's dense FP16 PFLOPS: what a PFLOPS-hour costs."""
    entry = info.catalogue.get(model)
    pflops = entry.pflops if entry is not None else None
    if not pflops:
        return None
    return (price / pflops).quantize(Decimal("0.01"))


def _fit_message(
    job: JobRequest,
    info: ClusterInfo,
    models: Mapping[str, ModelCapacity],
    accepted: frozenset[str] | None,
    held: Mapping[Pair, str],
) -> str:
    name = info.name
    considered = [m for m in _considered(models, accepted) if _capable(job, info, m)]
    if not considered and job.capability is not None:
        return f"{name}: no device with {job.capability}{_has(info, models, accepted)}"
    if not considered:
        return f"{name}: no {_names(accepted) if accepted is not None else 'GPUs'}"
    notes = []
    for model in considered:
        capacity = models[model]
        code = _verdict(job, name, capacity, info.prices.get(model), held)
        if code == Rejection.NOT_PRICED:
            notes.append(f"{model} not priced")
        elif code == Rejection.PRICE_ABOVE_HOLD:
            cap = format_money(job.price_cap or Decimal(0))
            notes.append(
                f"{model} at {format_money(info.prices[model])} {info.currency}/GPU-hour, above "
                f"the {cap} its hold covers (priced before a price rise)"
            )
        elif code == Rejection.TOO_SMALL:
            notes.append(_too_small(capacity, job))
        elif code == Rejection.HELD_FOR_QUEUED_JOB:
            notes.append(f"{model} held for queued job {held[name, model]}")
        elif code == Rejection.NO_CAPACITY:
            notes.append(_short_of(capacity, job))
    return f"{name}: " + " and ".join(notes)


def _has(
    info: ClusterInfo, models: Mapping[str, ModelCapacity], accepted: frozenset[str] | None
) -> str:
    """What the member has instead, for a message: `` (has L40S: 362 TFLOPS, 48 GiB)``."""
    described = []
    for model in _considered(models, accepted):
        entry = info.catalogue.get(model)
        if entry is None:
            described.append(f"{model}: not in the accelerator catalogue")
        else:
            tflops = "no known" if entry.fp16_tflops is None else str(entry.fp16_tflops)
            described.append(f"{model}: {entry.vendor}, {tflops} TFLOPS, {entry.memory_gib} GiB")
    return f" (has {'; '.join(described)})" if described else ""


def _rank(
    job: JobRequest, info: ClusterInfo, capacity: ModelCapacity, price: Decimal
) -> tuple[Decimal | int | float | str, ...]:
    health = capacity.fresh_nodes / capacity.nodes if capacity.nodes else 0.0
    if job.policy == PlacementPolicy.MOST_HEADROOM:
        return (-capacity.free, price, -health, capacity.cluster, capacity.model)
    if job.capability is not None:
        # Capable models only get here, so each has a figure and a PFLOPS price.
        per_pflops = price_per_pflops_hour(info, capacity.model, price) or price
        return (per_pflops, -capacity.free, -health, capacity.cluster, capacity.model)
    return (price, -capacity.free, -health, capacity.cluster, capacity.model)


def _names(models: frozenset[str]) -> str:
    return " or ".join(sorted(models))


def _busy_note(capacity: ModelCapacity) -> str:
    parts = []
    if capacity.busy_untracked:
        parts.append(f"{capacity.busy_untracked} more busy outside Kubernetes")
    if capacity.unhealthy:
        parts.append(f"{capacity.unhealthy} unhealthy")
    return f" ({', '.join(parts)})" if parts else ""


def _too_small(capacity: ModelCapacity, job: JobRequest) -> str:
    model, g = capacity.model, job.gpus_per_replica
    largest = capacity.max_allocatable_on_node
    if largest == 0:
        return f"no schedulable {model} node"
    if largest < g:
        return f"{model} nodes have at most {largest} GPUs, each replica needs {g}"
    return f"{capacity.allocatable} {model} in all, job needs {job.total_gpus} on one cluster"


def _short_of(capacity: ModelCapacity, job: JobRequest) -> str:
    model, free = capacity.model, capacity.free
    g, total = job.gpus_per_replica, job.total_gpus
    note = _busy_note(capacity)
    if free < total:
        return f"{free} {model} free{note}, job needs {total} on one cluster"
    if capacity.max_free_on_node < g:
        return (
            f"{free} {model} free{note} but at most {capacity.max_free_on_node} on one node, "
            f"each replica needs {g}"
        )
    fit = capacity.replicas_that_fit(g)
    return (
        f"{free} {model} free{note} but only {fit} of {job.replicas} replicas of {g} fit on "
        "its nodes"
    )


def _allocate(job: JobRequest, candidate: _Candidate, index: CapacityIndex) -> Choice | None:
    capacity = candidate.capacity
    g = job.gpus_per_replica
    gpus = index.allocate(capacity.cluster, capacity.model, job.replicas, g)
    if gpus is None:
        return None
    return Choice(
        cluster=capacity.cluster,
        model=capacity.model,
        price_per_gpu_hour=candidate.price,
        currency=candidate.info.currency,
        allocations=tuple(NodeAllocation(node, n // g, n) for node, n in sorted(gpus.items())),
        free=capacity.free,
        nodes=capacity.nodes,
        fresh_nodes=capacity.fresh_nodes,
        price_per_pflops_hour=price_per_pflops_hour(
            candidate.info, capacity.model, candidate.price
        ),
        fp16_tflops=_tflops(candidate.info, capacity.model),
    )


def _tflops(info: ClusterInfo, model: str) -> int | None:
    entry = info.catalogue.get(model)
    return None if entry is None else entry.fp16_tflops


def _offer(job: JobRequest, info: ClusterInfo, capacity: ModelCapacity, price: Decimal) -> str:
    offer = (
        f"{capacity.free} {capacity.model} free at {format_money(price)} {info.currency}/GPU-hour"
    )
    if job.capability is None:
        return offer
    per_pflops = price_per_pflops_hour(info, capacity.model, price)
    tflops = _tflops(info, capacity.model)
    if per_pflops is None or tflops is None:
        return offer
    return f"{offer} = {format_money(per_pflops)} {info.currency}/PFLOPS-hour at {tflops} TFLOPS"


_STATIC: Final = frozenset(
    {
        Rejection.NOT_IN_JOB_CLUSTERS,
        Rejection.REGION_NOT_ALLOWED,
        Rejection.NOT_ALLOWED_BY_VOUCHER,
        Rejection.CURRENCY_MISMATCH,
        Rejection.POD_SECURITY_LEVEL,
        Rejection.TEMPLATE_NOT_RUN,
        Rejection.NOT_READY,
        Rejection.CORDONED,
    }
)


# Verdicts that only a change of the job, or of a member's spec or nodes, could lift: neither
# freed capacity nor a member coming back changes them.
_LASTING: Final = (_STATIC - {Rejection.NOT_READY, Rejection.CORDONED}) | {
    Rejection.NO_ACCEPTED_MODEL,
    Rejection.NO_CAPABLE_MODEL,
    Rejection.NOT_PRICED,
    Rejection.PRICE_ABOVE_HOLD,
    Rejection.TOO_SMALL,
}


def _rest_order(rejected: _Rejected) -> tuple[int, str]:
    """Clusters short of GPUs before the others, each group by name."""
    return (1 if rejected.code in _TRANSIENT else 2, rejected.info.name)


def _render(context: _Context, rejected: _Rejected) -> str:
    """The message of a cluster that does not fit."""
    code, info, job = rejected.code, rejected.info, context.job
    if code in _STATIC:
        return _static_message(code, job, info)
    if context.accepted is not None and not context.accepted:
        voucher = job.voucher.name if job.voucher is not None else ""
        return f"{info.name}: voucher {voucher} allows none of {_names(job.gpu_models)}"
    return _fit_message(job, info, rejected.models, context.accepted, context.held)


def _render_other(context: _Context, candidate: _Candidate) -> str:
    """The message of a cluster that fit but lost: its offer and what beat it."""
    offer = _offer(context.job, candidate.info, candidate.capacity, candidate.price)
    best = context.best
    if best is None:
        return f"{candidate.info.name}: {offer}, not chosen"
    winner = best.info.name
    cheaper = (
        f"{winner} is cheaper per PFLOPS-hour"
        if context.job.capability is not None
        and context.job.policy != PlacementPolicy.MOST_HEADROOM
        else f"{winner} is cheaper"
    )
    roomier = f"{winner} has more free GPUs"
    words = (
        (roomier, cheaper)
        if context.job.policy == PlacementPolicy.MOST_HEADROOM
        else (cheaper, roomier)
    ) + (f"{winner} has fresher telemetry", f"{winner} comes first by name")
    why = next(
        (
            text
            for mine, theirs, text in zip(candidate.rank, best.rank, words, strict=False)
            if mine != theirs
        ),
        f"{winner} comes first by name",
    )
    return f"{candidate.info.name}: {offer}, not chosen ({why})"


def _telemetry_note(choice: Choice) -> str:
    if choice.fresh_nodes == choice.nodes:
        return ""
    if choice.fresh_nodes == 0:
        return " (no fresh telemetry: judged by Kubernetes' view)"
    stale = choice.nodes - choice.fresh_nodes
    return f" (telemetry stale on {stale} of {choice.nodes} nodes: Kubernetes' view used there)"


def _decision(
    context: _Context,
    choice: Choice | None,
    others: list[_Candidate],
    rejected: list[_Rejected],
    *,
    waiting: set[Pair],
    limit: int,
) -> Decision:
    parts: list[str] = []
    if choice is not None:
        offer = (
            f"{choice.free} {choice.model} free at {format_money(choice.price_per_gpu_hour)} "
            f"{choice.currency}/GPU-hour"
        )
        if context.job.capability is not None and choice.price_per_pflops_hour is not None:
            offer += (
                f" = {format_money(choice.price_per_pflops_hour)} {choice.currency}/PFLOPS-hour "
                f"at {choice.fp16_tflops} TFLOPS"
            )
        parts.append(f"{choice.cluster}: {offer}, chosen{_telemetry_note(choice)}")
        reason = JobReason.PLACED
    elif others or any(r.code in _TRANSIENT for r in rejected):
        reason = JobReason.NO_CAPACITY
    else:
        reason = JobReason.NO_ELIGIBLE_CLUSTER
    room = max(0, limit - len(parts))
    shown_others = heapq.nsmallest(room, others)
    room -= len(shown_others)
    shown_rest = heapq.nsmallest(room, rejected, key=_rest_order) if room else []
    parts += [_render_other(context, c) for c in shown_others]
    parts += [_render(context, r) for r in shown_rest]
    hidden = len(others) + len(rejected) - len(shown_others) - len(shown_rest)
    if hidden:
        counts = Counter(r.code for r in rejected)
        counts.subtract(r.code for r in shown_rest)
        counts[Rejection.NOT_CHOSEN] += len(others) - len(shown_others)
        detail = ", ".join(
            f"{count} {_SHORT[code]}"
            for code, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
            if count > 0
        )
        parts.append(f"{hidden} more clusters: {detail}")
    if not parts:
        parts.append("no member clusters are registered")
    return Decision(
        job=context.job.key,
        choice=choice,
        reason=reason,
        summary="; ".join(parts),
        waiting_on=frozenset(waiting),
        _context=context,
        _others=tuple(others),
        _rejected=tuple(rejected),
    )
