"""Admission limits: a table of jobs a voucher must refuse, each naming the limit and by how much.

Every case starts from the same voucher (team-a/gpu-2026: 50000.00 CNY, no limits), the same
members and the same job (2 replicas x 4 GPUs for 2h: 3200.00 CNY at sh-1's H100 price) and
changes one thing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from suanli.api.computejob import ComputeJob
from suanli.api.membercluster import MemberCluster
from suanli.api.reasons import JobReason
from suanli.api.voucherquota import VoucherQuota
from suanli.vouchers.keys import job_key
from suanli.vouchers.ledger import Ledger, ReservationRequest, VoucherTerms
from suanli.vouchers.limits import Allowed, Refused, check_voucher_limits, evaluate
from suanli.vouchers.pricing import offers_from_members
from suanli.vouchers.refusals import Refusal, RefusalReason

NOW = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)

# --- builders -----------------------------------------------------------------------------------


def make_voucher(**spec: Any) -> VoucherQuota:
    base = {"amount": 50000, "validUntil": "2027-01-01T00:00:00Z"}
    return VoucherQuota.model_validate(
        {"metadata": {"name": "gpu-2026", "namespace": "team-a"}, "spec": {**base, **spec}}
    )


def make_job(**spec: Any) -> ComputeJob:
    base: dict[str, Any] = {
        "replicas": 2,
        "gpusPerReplica": 4,
        "maxRuntime": "2h",
        "voucherRef": {"name": "gpu-2026"},
        "template": {"spec": {"containers": [{"name": "main", "image": "train:1"}]}},
    }
    return ComputeJob.model_validate(
        {
            "metadata": {"name": "train", "namespace": "team-a", "uid": "uid-train"},
            "spec": {**base, **spec},
        }
    )


def make_member(name: str, region: str, prices: dict[str, str], **spec: Any) -> MemberCluster:
    return MemberCluster.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "kubeconfigSecretRef": {"name": name, "namespace": "suanli-system"},
                "region": region,
                "prices": [{"gpuModel": m, "pricePerGPUHour": p} for m, p in prices.items()],
                **spec,
            },
        }
    )


OFFERS = offers_from_members(
    [
        make_member("sh-1", "shanghai-pudong", {"H100": "200.00", "A800": "120.00"}),
        make_member("sh-2", "shanghai-minhang", {"H100": "180.00", "L40S": "60.00"}),
        make_member("sg-1", "singapore", {"H100": "30.00"}, currency="USD"),
    ]
)


def fresh(voucher: VoucherQuota) -> Ledger:
    return Ledger(VoucherTerms.from_voucher(voucher))


def busy(voucher: VoucherQuota) -> Ledger:
    """47800.00 spent by a finished job, 1000.00 and 4 GPUs held by a running one."""
    return (
        fresh(voucher)
        .reserve(ReservationRequest("uid-old", "team-a/old", Decimal("50000.00"), 8))
        .charge("uid-old", 1, Decimal("47800.00"))
        .close("uid-old")
        .reserve(ReservationRequest("uid-running", "team-a/running", Decimal("1000.00"), 4))
    )


# --- the table ----------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    reason: RefusalReason | None
    says: list[str] = field(default_factory=list)
    voucher: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)
    ledger: Callable[[VoucherQuota], Ledger] = fresh
    now: datetime = NOW


CASES = [
    Case("fits", None),
    Case(
        "expired",
        RefusalReason.EXPIRED,
        ["voucher team-a/gpu-2026 expired at 2026-02-28T00:00:00Z (spec.validUntil), 32h ago"],
        voucher={"validUntil": "2026-02-28T00:00:00Z"},
    ),
    Case(
        "expires-exactly-now",
        RefusalReason.EXPIRED,
        ["expired at 2026-03-01T08:00:00Z"],
        voucher={"validUntil": "2026-03-01T08:00:00Z"},
    ),
    Case(
        "not-yet-valid",
        RefusalReason.NOT_YET_VALID,
        [
            "voucher team-a/gpu-2026 is not valid until 2026-03-01T09:30:00Z (spec.validFrom), "
            "1h30m from now"
        ],
        voucher={"validFrom": "2026-03-01T09:30:00Z"},
    ),
    Case(
        "over-gpus-per-job",
        RefusalReason.TOO_MANY_GPUS_PER_JOB,
        [
            "voucher team-a/gpu-2026 allows at most 6 GPUs per job (spec.limits.maxGPUsPerJob); "
            "this job asks for 8 (2 replicas x 4 GPUs): 2 over"
        ],
        voucher={"limits": {"maxGPUsPerJob": 6}},
    ),
    Case(
        "runtime-too-long",
        RefusalReason.RUNTIME_TOO_LONG,
        ["at most 1h30m (spec.limits.maxRuntime); this job asks for 2h: 30m over"],
        voucher={"limits": {"maxRuntime": "90m"}},
    ),
    Case(
        "excluded-gpu-model",
        RefusalReason.GPU_MODEL_NOT_ALLOWED,
        [
            "voucher team-a/gpu-2026 does not pay for GPU model A800 (spec.allowedGPUModels: "
            "H100, L40S); remove it from the job's spec.gpuModels"
        ],
        voucher={"allowedGPUModels": ["H100", "L40S"]},
        job={"gpuModels": ["H100", "A800"]},
    ),
    Case(
        "excluded-gpu-models",
        RefusalReason.GPU_MODEL_NOT_ALLOWED,
        ["does not pay for GPU models A800, L40S", "remove them"],
        voucher={"allowedGPUModels": ["H100"]},
        job={"gpuModels": ["A800", "L40S"]},
    ),
    Case(
        "disallowed-cluster",
        RefusalReason.CLUSTER_NOT_ALLOWED,
        [
            "voucher team-a/gpu-2026 pays only for clusters sh-2 (spec.allowedClusters); the "
            "job's spec.placement.clusters (sh-1) names none of them"
        ],
        voucher={"allowedClusters": ["sh-2"]},
        job={"placement": {"clusters": ["sh-1"]}},
    ),
    Case(
        "some-placement-cluster-allowed",
        None,
        voucher={"allowedClusters": ["sh-2"]},
        job={"placement": {"clusters": ["sh-1", "sh-2"]}},
    ),
    Case(
        "regions-leave-no-allowed-cluster",
        RefusalReason.NO_ELIGIBLE_OFFER,
        ["not among the voucher's spec.allowedClusters (sh-2)"],
        voucher={"allowedClusters": ["sh-2"]},
        job={"placement": {"regions": ["shanghai-pudong"]}},
    ),
    Case(
        "over-concurrent-gpus",
        RefusalReason.CONCURRENT_GPUS_EXCEEDED,
        [
            "voucher team-a/gpu-2026 allows at most 10 GPUs at once "
            "(spec.limits.maxConcurrentGPUs): 4 are held by 1 unfinished jobs and this job "
            "needs 8, 12 in all: 2 over"
        ],
        voucher={"amount": 100000, "limits": {"maxConcurrentGPUs": 10}},
        ledger=busy,
    ),
    Case(
        "over-concurrent-jobs",
        RefusalReason.CONCURRENT_JOBS_EXCEEDED,
        ["allows at most 1 unfinished jobs at once (spec.limits.maxConcurrentJobs) and 1 are"],
        voucher={"amount": 100000, "limits": {"maxConcurrentJobs": 1}},
        ledger=busy,
    ),
    Case(
        "over-balance",
        RefusalReason.INSUFFICIENT_BALANCE,
        [
            "voucher team-a/gpu-2026 cannot cover this job: worst case 3200.00 CNY, available "
            "1200.00 CNY (amount 50000.00 + credit 0.00 - spent 47800.00 - reserved 1000.00): "
            "short by 2000.00 CNY"
        ],
        ledger=busy,
    ),
    Case(
        "credit-line-lets-it-through",
        None,
        voucher={"creditLine": 2000},  # available exactly 3200.00: the worst case fits
        ledger=busy,
    ),
    Case(
        "credit-line-one-cent-short",
        RefusalReason.INSUFFICIENT_BALANCE,
        ["+ credit 1999.99 -", "short by 0.01 CNY"],
        voucher={"creditLine": "1999.99"},
        ledger=busy,
    ),
    Case(
        "currency-mismatch",
        RefusalReason.CURRENCY_MISMATCH,
        [
            "the members that qualify (sg-1, sh-1, sh-2) price in CNY, USD, not in the "
            "voucher's currency EUR"
        ],
        voucher={"currency": "EUR"},
    ),
    Case(
        "no-member-offers-the-model",
        RefusalReason.NO_ELIGIBLE_OFFER,
        ["no member offers the GPU models the job accepts (B200, spec.gpuModels)"],
        job={"gpuModels": ["B200"]},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_admission_table(case: Case):
    voucher = make_voucher(**case.voucher)
    decision = evaluate(make_job(**case.job), voucher, OFFERS, case.ledger(voucher), case.now)
    if case.reason is None:
        assert isinstance(decision, Allowed), decision
        assert decision.allowed
        return
    assert isinstance(decision, Refused)
    assert not decision.allowed
    assert decision.reason is case.reason
    for text in case.says:
        assert text in decision.message


def test_allowed_carries_the_request_to_commit():
    voucher = make_voucher()
    decision = evaluate(make_job(), voucher, OFFERS, fresh(voucher), NOW)
    assert isinstance(decision, Allowed)
    assert decision.request.job == "team-a/train"
    assert decision.amount == Decimal("3200.00")
    assert decision.request.gpus == 8
    assert decision.request.at == NOW
    assert str(decision.worst_case.offer) == "sh-1/H100"


def test_every_failing_limit_is_reported():
    voucher = make_voucher(
        validUntil="2026-01-01T00:00:00Z", limits={"maxGPUsPerJob": 4, "maxRuntime": "1h"}
    )
    decision = evaluate(make_job(), voucher, OFFERS, busy(voucher), NOW)
    assert isinstance(decision, Refused)
    assert [r.reason for r in decision.refusals] == [
        RefusalReason.EXPIRED,
        RefusalReason.TOO_MANY_GPUS_PER_JOB,
        RefusalReason.RUNTIME_TOO_LONG,
        RefusalReason.INSUFFICIENT_BALANCE,
    ]
    assert decision.message.startswith("(1) voucher team-a/gpu-2026 expired at ")
    assert "; (4) voucher team-a/gpu-2026 cannot cover this job" in decision.message


def test_model_and_cluster_refusals_skip_the_redundant_pricing_refusal():
    voucher = make_voucher(allowedGPUModels=["H100"])
    decision = evaluate(make_job(gpuModels=["A800"]), voucher, OFFERS, fresh(voucher), NOW)
    assert isinstance(decision, Refused)
    assert [r.reason for r in decision.refusals] == [RefusalReason.GPU_MODEL_NOT_ALLOWED]


def test_the_current_spec_is_judged_not_the_ledgers_old_terms():
    old = make_voucher()
    ledger = busy(old)  # terms: 50000.00, no credit
    raised = make_voucher(creditLine=5000)
    assert isinstance(evaluate(make_job(), raised, OFFERS, ledger, NOW), Allowed)


def test_a_job_already_held_is_allowed_again_without_a_second_hold():
    voucher = make_voucher(amount=3200)
    job = make_job()
    request = ReservationRequest("uid-train", job_key(job), Decimal("3200.00"), 8)
    ledger = fresh(voucher).reserve(request)
    assert isinstance(evaluate(job, voucher, OFFERS, ledger, NOW), Allowed)


def test_static_limits_need_no_ledger():
    voucher = make_voucher(limits={"maxGPUsPerJob": 8})
    assert check_voucher_limits(make_job(), voucher, NOW) == []
    assert [r.limit for r in check_voucher_limits(make_job(replicas=3), voucher, NOW)] == [
        "spec.limits.maxGPUsPerJob"
    ]


def test_every_reason_maps_to_a_job_condition_reason():
    for reason in RefusalReason:
        refusal = Refusal(reason, "spec", "message")
        assert isinstance(refusal.job_reason, JobReason)
    assert Refusal(RefusalReason.INSUFFICIENT_BALANCE, "", "").job_reason is (
        JobReason.INSUFFICIENT_BALANCE
    )
    assert Refusal(RefusalReason.EXPIRED, "", "").job_reason is JobReason.VOUCHER_INACTIVE


def test_a_job_without_a_uid_cannot_be_held():
    job = make_job()
    job.metadata.uid = None
    with pytest.raises(ValueError, match="no uid"):
        evaluate(job, make_voucher(), OFFERS, fresh(make_voucher()), NOW)
