"""Placement decisions, table-driven: which cluster, which model, which nodes, and the reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from suanli.api.computejob import PlacementPolicy
from suanli.api.podpolicy import PodSecurityLevel
from suanli.api.reasons import JobReason
from suanli.api.template_needs import MemberOffer, Need, TemplateNeeds
from suanli.dispatch.capacity import CapacityIndex
from suanli.dispatch.models import ClusterInfo, JobRequest, NodeInfo, PodInfo, VoucherTerms
from suanli.dispatch.policy import Rejection, decide, never_placed
from suanli.telemetry.parse import GpuTelemetry, NodeTelemetry, TelemetrySnapshot

T0 = 1_750_000_000.0


@dataclass
class Member:
    """A member cluster for a test: identical nodes, some GPUs used, optional telemetry."""

    name: str
    model: str = "H100"
    price: str = "28.00"
    nodes: int = 2
    gpus: int = 8
    used: tuple[int, ...] = ()
    """GPUs requested by pods, per node."""
    busy_untracked: tuple[int, ...] = ()
    """GPUs busy outside Kubernetes, per node, as fresh telemetry reports."""
    telemetry: bool = True
    region: str = "shanghai"
    ready: bool = True
    cordoned: bool = False
    currency: str = "CNY"
    level: PodSecurityLevel = PodSecurityLevel.BASELINE
    prices: dict[str, str] = field(default_factory=dict)
    """Prices beyond ``model: price`` (an empty ``price`` leaves the model unpriced)."""


def federation(*members: Member) -> CapacityIndex:
    index = CapacityIndex(clock=lambda: T0)
    for m in members:
        prices = {m.model: Decimal(m.price)} if m.price else {}
        prices.update({model: Decimal(p) for model, p in m.prices.items()})
        index.upsert_cluster(
            ClusterInfo(
                m.name,
                m.region,
                prices,
                currency=m.currency,
                ready=m.ready,
                not_ready_message="" if m.ready else "API server unreachable for 3m",
                cordoned=m.cordoned,
                pod_security_level=m.level,
            )
        )
        for n in range(m.nodes):
            node = f"{m.name}-{n}"
            index.upsert_node(m.name, NodeInfo(node, m.model, m.gpus))
            used = m.used[n] if n < len(m.used) else 0
            if used:
                index.upsert_pod(m.name, PodInfo(f"{node}-pod", node, used))
            if m.telemetry:
                extra = m.busy_untracked[n] if n < len(m.busy_untracked) else 0
                busy = used + extra
                gpus = tuple(
                    GpuTelemetry(
                        node, i, f"{node}-{i}", m.model, utilization_percent=99 * (i < busy)
                    )
                    for i in range(m.gpus)
                )
                index.update_telemetry(
                    m.name, TelemetrySnapshot(T0, T0, (NodeTelemetry(node, gpus),))
                )
    return index


def request(**spec: Any) -> JobRequest:
    spec.setdefault("gpu_models", frozenset({"H100"}))
    return JobRequest(key="uid-1", name="team-a/train", tenant="team-a", **spec)


@dataclass(frozen=True)
class Case:
    id: str
    members: tuple[Member, ...]
    job: JobRequest
    cluster: str | None
    summary: str
    reason: JobReason = JobReason.PLACED
    model: str | None = None
    nodes: dict[str, int] | None = None


VOUCHER = VoucherTerms(name="v1", allowed_clusters=frozenset({"member-a", "member-b"}))

CASES = [
    Case(
        "the example: the only cluster with the model",
        (Member("member-a", used=(6, 8)), Member("member-b", model="A800")),
        request(gpus_per_replica=2),
        "member-a",
        "member-a: 2 H100 free at 28.00 CNY/GPU-hour, chosen; member-b: no H100",
        nodes={"member-a-0": 2},
    ),
    Case(
        "cheapest chosen",
        (Member("member-a", price="28.00"), Member("member-b", price="26.50")),
        request(replicas=2, gpus_per_replica=4),
        "member-b",
        "member-b: 16 H100 free at 26.50 CNY/GPU-hour, chosen; "
        "member-a: 16 H100 free at 28.00 CNY/GPU-hour, not chosen (member-b is cheaper)",
        nodes={"member-b-0": 8},
    ),
    Case(
        "equal prices: more headroom wins",
        (Member("member-a", used=(4,)), Member("member-b")),
        request(),
        "member-b",
        "member-b: 16 H100 free at 28.00 CNY/GPU-hour, chosen; "
        "member-a: 12 H100 free at 28.00 CNY/GPU-hour, not chosen (member-b has more free GPUs)",
    ),
    Case(
        "equal price and headroom: fresh telemetry wins",
        (Member("member-a", telemetry=False), Member("member-b")),
        request(),
        "member-b",
        "member-b: 16 H100 free at 28.00 CNY/GPU-hour, chosen; "
        "member-a: 16 H100 free at 28.00 CNY/GPU-hour, not chosen (member-b has fresher "
        "telemetry)",
    ),
    Case(
        "a member busy outside Kubernetes is skipped",
        (
            Member("member-a", price="20.00", busy_untracked=(6, 6)),
            Member("member-b", price="30.00"),
        ),
        request(gpus_per_replica=8),
        "member-b",
        "member-b: 16 H100 free at 30.00 CNY/GPU-hour, chosen; "
        "member-a: 4 H100 free (12 more busy outside Kubernetes), job needs 8 on one cluster",
    ),
    Case(
        "the gang fits whole in one cluster or not there",
        (
            Member("member-a", price="20.00", used=(4, 4)),
            Member("member-b", price="30.00", used=(4, 4)),
            Member("member-c", price="40.00", nodes=3, used=(4, 4)),
        ),
        request(replicas=3, gpus_per_replica=4),
        "member-c",
        "member-c: 16 H100 free at 40.00 CNY/GPU-hour, chosen; "
        "member-a: 8 H100 free, job needs 12 on one cluster; "
        "member-b: 8 H100 free, job needs 12 on one cluster",
        nodes={"member-c-0": 4, "member-c-1": 4, "member-c-2": 4},
    ),
    Case(
        "each replica fits on one node",
        (Member("member-a", price="20.00", used=(4, 4)), Member("member-b", price="30.00")),
        request(gpus_per_replica=8),
        "member-b",
        "member-b: 16 H100 free at 30.00 CNY/GPU-hour, chosen; "
        "member-a: 8 H100 free but at most 4 on one node, each replica needs 8",
    ),
    Case(
        "free GPUs in number but not in shape",
        (Member("member-a", nodes=3, used=(2, 2, 2)),),
        request(replicas=4, gpus_per_replica=4),
        None,
        "member-a: 18 H100 free but only 3 of 4 replicas of 4 fit on its nodes",
        reason=JobReason.NO_CAPACITY,
    ),
    Case(
        "cordoned, not Ready and disallowed clusters are skipped",
        (
            Member("member-a", price="40.00"),
            Member("member-b", price="10.00", cordoned=True),
            Member("member-c", price="10.00", ready=False),
            Member("member-d", price="10.00", region="beijing"),
            Member("member-e", price="10.00"),
            Member("member-f", price="10.00", currency="USD"),
        ),
        request(
            regions=frozenset({"shanghai"}),
            clusters=frozenset({"member-a", "member-b", "member-c", "member-d", "member-f"}),
            voucher=VoucherTerms(
                name="v1",
                allowed_clusters=frozenset({"member-a", "member-b", "member-c", "member-e"}),
            ),
        ),
        "member-a",
        "member-a: 16 H100 free at 40.00 CNY/GPU-hour, chosen; "
        "member-b: cordoned; "
        "member-c: not Ready (API server unreachable for 3m); "
        "member-d: region beijing not in spec.placement.regions; "
        "member-e: not in spec.placement.clusters; "
        "member-f: not allowed by voucher v1",
    ),
    Case(
        "prices in another currency",
        (Member("member-a", currency="USD"),),
        request(voucher=VoucherTerms(name="v1")),
        None,
        "member-a: prices in USD, voucher v1 pays in CNY",
        reason=JobReason.NO_ELIGIBLE_CLUSTER,
    ),
    Case(
        "MostHeadroom prefers free GPUs over price",
        (Member("member-a", price="20.00", used=(8,)), Member("member-b", price="30.00")),
        request(policy=PlacementPolicy.MOST_HEADROOM),
        "member-b",
        "member-b: 16 H100 free at 30.00 CNY/GPU-hour, chosen; "
        "member-a: 8 H100 free at 20.00 CNY/GPU-hour, not chosen (member-b has more free GPUs)",
    ),
    Case(
        "MostHeadroom breaks ties on price",
        (Member("member-a", price="20.00"), Member("member-b", price="30.00")),
        request(policy=PlacementPolicy.MOST_HEADROOM),
        "member-a",
        "member-a: 16 H100 free at 20.00 CNY/GPU-hour, chosen; "
        "member-b: 16 H100 free at 30.00 CNY/GPU-hour, not chosen (member-a is cheaper)",
    ),
    Case(
        "the cheapest of the accepted models",
        (Member("member-a", model="A800", price="15.00"), Member("member-b", price="28.00")),
        request(gpu_models=frozenset({"H100", "A800"})),
        "member-a",
        "member-a: 16 A800 free at 15.00 CNY/GPU-hour, chosen; "
        "member-b: 16 H100 free at 28.00 CNY/GPU-hour, not chosen (member-a is cheaper)",
        model="A800",
    ),
    Case(
        "any model, as far as the voucher allows",
        (Member("member-a", model="L40S", price="5.00"), Member("member-b", model="A800")),
        request(
            gpu_models=frozenset(),
            voucher=VoucherTerms(name="v1", allowed_models=frozenset({"A800"})),
        ),
        "member-b",
        "member-b: 16 A800 free at 28.00 CNY/GPU-hour, chosen; member-a: no A800",
        model="A800",
    ),
    Case(
        "job and voucher share no model",
        (Member("member-a"),),
        request(voucher=VoucherTerms(name="v1", allowed_models=frozenset({"A800"}))),
        None,
        "member-a: voucher v1 allows none of H100",
        reason=JobReason.NO_ELIGIBLE_CLUSTER,
    ),
    Case(
        "a model without a price gets no jobs",
        (Member("member-a", model="L40S", price=""),),
        request(gpu_models=frozenset()),
        None,
        "member-a: L40S not priced",
        reason=JobReason.NO_ELIGIBLE_CLUSTER,
    ),
    Case(
        "too large for any node, ever",
        (Member("member-a"), Member("member-b", nodes=1)),
        request(replicas=3, gpus_per_replica=16),
        None,
        "member-a: H100 nodes have at most 8 GPUs, each replica needs 16; "
        "member-b: H100 nodes have at most 8 GPUs, each replica needs 16",
        reason=JobReason.NO_ELIGIBLE_CLUSTER,
    ),
    Case(
        "too large for the cluster, ever",
        (Member("member-a"),),
        request(replicas=3, gpus_per_replica=8),
        None,
        "member-a: 16 H100 in all, job needs 24 on one cluster",
        reason=JobReason.NO_ELIGIBLE_CLUSTER,
    ),
    Case(
        "stale telemetry: Kubernetes' view, and the decision says so",
        (Member("member-a", telemetry=False),),
        request(),
        "member-a",
        "member-a: 16 H100 free at 28.00 CNY/GPU-hour, chosen (no fresh telemetry: judged by "
        "Kubernetes' view)",
    ),
    Case(
        "waiting for capacity",
        (Member("member-a", used=(8, 7)), Member("member-b", model="A800")),
        request(gpus_per_replica=2),
        None,
        "member-a: 1 H100 free, job needs 2 on one cluster; member-b: no H100",
        reason=JobReason.NO_CAPACITY,
    ),
    Case(
        "no members",
        (),
        request(),
        None,
        "no member clusters are registered",
        reason=JobReason.NO_ELIGIBLE_CLUSTER,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_placement(case: Case) -> None:
    decision = decide(case.job, federation(*case.members))
    assert decision.summary == case.summary
    assert decision.reason == case.reason
    assert decision.job == "uid-1"
    if case.cluster is None:
        assert decision.choice is None and not decision.placed
        return
    choice = decision.choice
    assert choice is not None
    assert choice.cluster == case.cluster
    assert choice.model == (case.model or "H100")
    assert sum(choice.gpus_by_node.values()) == case.job.total_gpus
    assert all(a.gpus == a.replicas * case.job.gpus_per_replica for a in choice.allocations)
    if case.nodes is not None:
        assert choice.gpus_by_node == case.nodes
    # every cluster not chosen has exactly one reason
    assert sorted(r.cluster for r in decision.reasons) == sorted(
        m.name for m in case.members if m.name != case.cluster
    )


def test_reasons_carry_codes_and_waiting_pairs() -> None:
    index = federation(
        Member("member-a", used=(8, 7)),
        Member("member-b", model="A800", price="10.00", prices={"H100": "9.00"}),
        Member("member-c", cordoned=True),
    )
    decision = decide(request(gpus_per_replica=2, gpu_models=frozenset({"H100", "A800"})), index)
    assert decision.choice is not None and decision.choice.pair == ("member-b", "A800")
    codes = {r.cluster: r.rejection for r in decision.reasons}
    assert codes == {"member-a": Rejection.NO_CAPACITY, "member-c": Rejection.CORDONED}
    assert decision.rejections == codes
    assert Rejection.NO_CAPACITY.transient and not Rejection.CORDONED.transient
    stuck = decide(request(gpus_per_replica=8, clusters=frozenset({"member-a"})), index)
    assert stuck.waiting_on == {("member-a", "H100")}
    assert str(stuck.reasons[0]) == "member-a: 1 H100 free, job needs 8 on one cluster"


def test_capacity_held_for_an_older_job_is_not_used() -> None:
    index = federation(Member("member-a", price="20.00"), Member("member-b", price="30.00"))
    decision = decide(request(), index, held={("member-a", "H100"): "team-b/big"})
    assert decision.choice is not None and decision.choice.cluster == "member-b"
    assert decision.summary.endswith("member-a: H100 held for queued job team-b/big")
    blocked = decide(
        request(clusters=frozenset({"member-a"})), index, held={("member-a", "H100"): "team-b/big"}
    )
    assert blocked.reason == JobReason.NO_CAPACITY
    assert blocked.waiting_on == {("member-a", "H100")}


def test_reasons_written_later_describe_the_moment_of_the_decision() -> None:
    index = federation(Member("member-a", used=(8, 7)))
    held: dict[tuple[str, str], str] = {}
    decision = decide(request(gpus_per_replica=2), index, held=held)
    held["member-a", "H100"] = "team-b/big"
    index.upsert_pod("member-a", PodInfo("gone", "member-a-1", 0, terminal=True))
    index.delete_pod("member-a", "member-a-0-pod")
    assert [r.message for r in decision.reasons] == [
        "member-a: 1 H100 free, job needs 2 on one cluster"
    ]


def test_the_summary_names_a_few_clusters_and_counts_the_rest() -> None:
    members = [Member("member-a")]
    members += [Member(f"other-{n:02}", model="L40S") for n in range(12)]
    members += [Member(f"off-{n:02}", cordoned=True) for n in range(5)]
    decision = decide(request(), federation(*members), summary_limit=4)
    assert decision.summary == (
        "member-a: 16 H100 free at 28.00 CNY/GPU-hour, chosen; off-00: cordoned; "
        "off-01: cordoned; off-02: cordoned; "
        "14 more clusters: 12 no accepted GPU model, 2 cordoned"
    )
    assert len(decision.reasons) == 17


def test_a_large_federation_is_decided_from_aggregates() -> None:
    members = [
        Member(f"m{n:03}", price=f"{20 + n % 7}.00", nodes=4, used=(n % 9, 8, 3, 5))
        for n in range(200)
    ]
    decision = decide(request(gpus_per_replica=8), federation(*members))
    assert decision.choice is not None
    # a whole free node only where n % 9 == 0; the cheapest of those (20.00) where n % 7 == 0
    assert decision.choice.price_per_gpu_hour == Decimal("20.00")
    assert decision.choice.cluster == "m000"
    assert decision.choice.gpus_by_node == {"m000-0": 8}


RUNS_AS_ROOT = (
    (PodSecurityLevel.RESTRICTED, "spec.template.spec.securityContext.runAsNonRoot: must be true"),
)


def test_a_member_requiring_restricted_is_passed_over_for_a_template_below_it() -> None:
    index = federation(
        Member("member-a", price="28.00"),
        Member("member-b", price="20.00", level=PodSecurityLevel.RESTRICTED),
    )
    decision = decide(request(unmet_levels=RUNS_AS_ROOT), index)
    assert decision.choice is not None and decision.choice.cluster == "member-a"
    assert decision.rejections == {"member-b": Rejection.POD_SECURITY_LEVEL}
    assert not Rejection.POD_SECURITY_LEVEL.transient
    assert str(decision.reasons[0]) == (
        "member-b: requires Pod Security level restricted, which the template does not meet: "
        "spec.template.spec.securityContext.runAsNonRoot: must be true"
    )
    # A template that meets restricted goes to the cheaper, stricter member.
    assert decide(request(), index).choice.cluster == "member-b"  # type: ignore[union-attr]


def test_a_member_that_does_not_offer_what_the_template_asks_is_passed_over_and_says_why() -> None:
    index = federation(Member("member-a", price="28.00"), Member("member-b", price="20.00"))
    rdma = frozenset({"rdma/hca"})
    index.upsert_cluster(
        ClusterInfo("member-a", "shanghai", {"H100": Decimal("28.00")}, offer=MemberOffer(rdma))
    )
    path = "spec.template.spec.containers[0].resources.limits[rdma/hca]"
    needs = TemplateNeeds(resources=(Need("rdma/hca", path),))
    decision = decide(request(needs=needs), index)
    assert decision.choice is not None and decision.choice.cluster == "member-a"
    assert decision.rejections == {"member-b": Rejection.TEMPLATE_NOT_RUN}
    assert not Rejection.TEMPLATE_NOT_RUN.transient
    assert str(decision.reasons[0]) == (
        f"member-b: {path}: rdma/hca is not among the member's spec.allowedResources"
    )
    # The cheaper member takes a job that asks for nothing beyond GPUs.
    assert decide(request(), index).choice.cluster == "member-b"  # type: ignore[union-attr]


def test_a_job_is_never_placed_only_where_every_member_rejects_it_for_good() -> None:
    full = federation(Member("member-a", used=(8, 8)), Member("member-b", model="A800"))
    assert not never_placed(request(), full)  # member-a's H100s may free up
    gone = federation(Member("member-a", ready=False), Member("member-b", model="A800"))
    assert not never_placed(request(), gone)  # member-a may come back
    elsewhere = federation(Member("member-b", model="A800"))
    assert never_placed(request(), elsewhere)
    assert never_placed(request(clusters=frozenset({"member-c"})), full)
    assert not never_placed(request(), federation())  # a member may join


def test_a_job_only_restricted_members_could_run_waits_as_not_eligible() -> None:
    index = federation(Member("member-b", level=PodSecurityLevel.RESTRICTED))
    decision = decide(request(unmet_levels=RUNS_AS_ROOT), index)
    assert decision.choice is None
    assert decision.reason == JobReason.NO_ELIGIBLE_CLUSTER


def test_a_model_priced_above_what_the_hold_covers_is_not_chosen() -> None:
    # The hold was priced at 28.00; member-b has since raised its price to 30.00.
    index = federation(Member("member-a", price="30.00"), Member("member-b", price="28.00"))
    index.upsert_cluster(ClusterInfo("member-a", "shanghai", {"H100": Decimal("30.00")}))
    decision = decide(request(price_cap=Decimal("28.00")), index)
    assert decision.choice is not None and decision.choice.cluster == "member-b"
    assert decision.rejections == {"member-a": Rejection.PRICE_ABOVE_HOLD}
    assert not Rejection.PRICE_ABOVE_HOLD.transient
    assert str(decision.reasons[0]) == (
        "member-a: H100 at 30.00 CNY/GPU-hour, above the 28.00 its hold covers "
        "(priced before a price rise)"
    )
    alone = federation(Member("member-a", price="30.00"))
    assert decide(request(price_cap=Decimal("28.00")), alone).reason == (
        JobReason.NO_ELIGIBLE_CLUSTER
    )
