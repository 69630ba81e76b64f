"""Pricing: exact worst cases rounded up, charges rounded half up, and eligibility refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suanli.api.catalogue import DEFAULT_CATALOGUE
from suanli.api.computejob import ComputeJobSpec
from suanli.api.membercluster import MemberCluster
from suanli.api.template_needs import MemberOffer
from suanli.api.voucherquota import VoucherQuota
from suanli.vouchers.pricing import (
    PriceOffer,
    WorstCase,
    charge_for,
    eligible_offers,
    gpu_seconds,
    offers_from_members,
    price_cap,
    price_worst_case,
    worst_case_cost,
)
from suanli.vouchers.refusals import Refusal, RefusalReason

# --- builders -----------------------------------------------------------------------------------


def member(name: str, region: str, prices: dict[str, str], **spec: Any) -> MemberCluster:
    return MemberCluster.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "kubeconfigSecretRef": {"name": f"{name}-kubeconfig", "namespace": "suanli-system"},
                "region": region,
                "prices": [{"gpuModel": m, "pricePerGPUHour": p} for m, p in prices.items()],
                **spec,
            },
        }
    )


def voucher(**spec: Any) -> VoucherQuota:
    return VoucherQuota.model_validate(
        {
            "metadata": {"name": "gpu-2026", "namespace": "team-a"},
            "spec": {"amount": 50000, "validUntil": "2027-01-01T00:00:00Z", **spec},
        }
    )


def job(**spec: Any) -> ComputeJobSpec:
    base: dict[str, Any] = {
        "replicas": 2,
        "gpusPerReplica": 4,
        "maxRuntime": "2h",
        "template": {"spec": {"containers": [{"name": "main", "image": "train:1"}]}},
    }
    return ComputeJobSpec.model_validate({**base, **spec})


MEMBERS = [
    member("sh-1", "shanghai-pudong", {"H100": "200.00", "A800": "120.00"}),
    member("sh-2", "shanghai-minhang", {"H100": "180.00", "L40S": "60.00"}),
    member("bj-1", "beijing", {"H100": "250.00"}, cordoned=True),
    member("sg-1", "singapore", {"H100": "30.00"}, currency="USD"),
]
OFFERS = offers_from_members(MEMBERS)

# --- arithmetic ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpus", "runtime", "price", "expected"),
    [
        (8, timedelta(hours=2), "200.00", "3200.00"),
        (1, timedelta(seconds=1), "10.00", "0.01"),  # 0.00277..., up
        (1, timedelta(minutes=1), "0.59", "0.01"),  # 0.00983..., up
        (3, timedelta(minutes=20), "0.10", "0.10"),  # exact: no rounding
        (1, timedelta(seconds=1), "36.00", "0.01"),  # exactly 0.01
        (1, timedelta(seconds=1), "36.01", "0.02"),  # a hair above 0.01
        (256, timedelta(hours=720), "99999.99", "18431998156.80"),
        (0, timedelta(hours=1), "10.00", "0.00"),
    ],
)
def test_worst_case_cost_rounds_up_exactly(gpus, runtime, price, expected):
    assert worst_case_cost(gpus, runtime, Decimal(price)) == Decimal(expected)
    assert str(worst_case_cost(gpus, runtime, Decimal(price))) == expected


@pytest.mark.parametrize(
    ("seconds", "price", "expected"),
    [
        (3600, "12.50", "12.50"),
        (1, "18.00", "0.01"),  # 0.005: half up
        (1, "17.99", "0.00"),  # 0.004997: down
        (7200 * 8, "200.00", "3200.00"),
        (0, "200.00", "0.00"),
        (5400, "0.03", "0.05"),  # 0.045: half up
    ],
)
def test_charge_rounds_half_up(seconds, price, expected):
    assert str(charge_for(seconds, Decimal(price))) == expected


def test_arithmetic_refuses_bad_inputs():
    with pytest.raises(ValueError, match="two decimals"):
        worst_case_cost(1, timedelta(hours=1), Decimal("1.005"))
    with pytest.raises(ValueError, match="negative"):
        worst_case_cost(-1, timedelta(hours=1), Decimal("1.00"))
    with pytest.raises(ValueError, match="negative"):
        charge_for(-1, Decimal("1.00"))
    with pytest.raises(ValueError, match="negative"):
        gpu_seconds(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), -1)


prices = st.integers(min_value=1, max_value=10_000_000).map(lambda cents: Decimal(cents) / 100)


@settings(max_examples=150, deadline=None)
@given(
    gpus=st.integers(min_value=1, max_value=256),
    runtime=st.integers(min_value=1, max_value=720 * 3600),
    used_fraction=st.fractions(min_value=0, max_value=1),
    price=prices,
)
def test_estimate_bounds_the_charge(gpus, runtime, used_fraction, price):
    """The estimate is the exact cost rounded up; a charge for no more time never exceeds it."""
    estimate = worst_case_cost(gpus, timedelta(seconds=runtime), price)
    exact = Fraction(gpus * runtime) * Fraction(price) / 3600
    assert exact <= Fraction(estimate) < exact + Fraction(1, 100)
    used = int(gpus * runtime * used_fraction)
    charge = charge_for(used, price)
    exact_charge = Fraction(used) * Fraction(price) / 3600
    assert abs(Fraction(charge) - exact_charge) <= Fraction(1, 200)
    assert charge <= estimate
    assert charge.as_tuple().exponent == -2
    assert estimate.as_tuple().exponent == -2


def test_gpu_seconds():
    start = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
    assert gpu_seconds(start, start + timedelta(hours=1), 8) == 8 * 3600
    # A partial second is not billed.
    assert gpu_seconds(start, start + timedelta(seconds=10, milliseconds=999), 2) == 20
    # Clock skew: a reversed interval counts as nothing rather than failing.
    assert gpu_seconds(start, start - timedelta(seconds=5), 4) == 0


# --- offers and eligibility ---------------------------------------------------------------------


def test_offers_from_members():
    assert [str(offer) for offer in OFFERS] == [
        "bj-1/H100",
        "sg-1/H100",
        "sh-1/A800",
        "sh-1/H100",
        "sh-2/H100",
        "sh-2/L40S",
    ]
    bj = OFFERS[0]
    assert bj == PriceOffer(
        "bj-1",
        "beijing",
        "H100",
        Decimal("250.00"),
        "CNY",
        cordoned=True,
        accelerator=DEFAULT_CATALOGUE.get("H100"),
        member=MemberOffer(accelerator_resources=DEFAULT_CATALOGUE.resources),
    )
    assert OFFERS[1].currency == "USD"


def test_worst_case_takes_the_highest_eligible_price():
    # bj-1 (250, cordoned) and sg-1 (USD) are not eligible: sh-1's H100 at 200 is the worst case.
    priced = price_worst_case(OFFERS, job(), voucher())
    assert isinstance(priced, WorstCase)
    assert str(priced.offer) == "sh-1/H100"
    assert priced.amount == Decimal("3200.00")
    assert priced.gpus == 8
    assert [str(o) for o in priced.eligible] == ["sh-1/A800", "sh-1/H100", "sh-2/H100", "sh-2/L40S"]
    assert "3200.00 CNY (8 GPUs x 2h x 200.00 CNY/GPU-hour on sh-1/H100)" in str(priced)


@pytest.mark.parametrize(
    ("job_spec", "voucher_spec", "worst"),
    [
        ({"gpuModels": ["A800", "L40S"]}, {}, "sh-1/A800"),
        ({}, {"allowedGPUModels": ["L40S"]}, "sh-2/L40S"),
        ({"placement": {"clusters": ["sh-2"]}}, {}, "sh-2/H100"),
        ({"placement": {"regions": ["shanghai-minhang"]}}, {}, "sh-2/H100"),
        ({}, {"allowedClusters": ["sh-2"]}, "sh-2/H100"),
        ({}, {"currency": "USD"}, "sg-1/H100"),
    ],
)
def test_each_constraint_narrows_the_offers(job_spec, voucher_spec, worst):
    priced = price_worst_case(OFFERS, job(**job_spec), voucher(**voucher_spec))
    assert isinstance(priced, WorstCase), priced
    assert str(priced.offer) == worst


@pytest.mark.parametrize(
    ("job_spec", "voucher_spec", "reason", "limit", "says"),
    [
        (
            {"gpuModels": ["B200"]},
            {},
            RefusalReason.NO_ELIGIBLE_OFFER,
            "ComputeJob:spec.gpuModels",
            "no member offers the GPU models the job accepts (B200, spec.gpuModels); members "
            "offer A800, H100, L40S",
        ),
        (
            {},
            {"allowedGPUModels": ["B200"]},
            RefusalReason.NO_ELIGIBLE_OFFER,
            "spec.allowedGPUModels",
            "no member offers a GPU model the voucher pays for (B200",
        ),
        (
            {"gpuModels": ["A800"], "placement": {"clusters": ["sh-2"]}},
            {},
            RefusalReason.NO_ELIGIBLE_OFFER,
            "ComputeJob:spec.placement.clusters",
            "none of the members offering those models (sh-1) is among the job's "
            "spec.placement.clusters (sh-2)",
        ),
        (
            {"gpuModels": ["A800"], "placement": {"regions": ["beijing"]}},
            {},
            RefusalReason.NO_ELIGIBLE_OFFER,
            "ComputeJob:spec.placement.regions",
            "in regions shanghai-pudong, not in the job's spec.placement.regions (beijing)",
        ),
        (
            {"gpuModels": ["A800"]},
            {"allowedClusters": ["sh-2", "bj-1"]},
            RefusalReason.NO_ELIGIBLE_OFFER,
            "spec.allowedClusters",
            "the members that qualify (sh-1) are not among the voucher's spec.allowedClusters "
            "(bj-1, sh-2)",
        ),
        (
            {"placement": {"regions": ["singapore"]}},
            {},
            RefusalReason.CURRENCY_MISMATCH,
            "spec.currency",
            "the members that qualify (sg-1) price in USD, not in the voucher's currency CNY",
        ),
        (
            {"placement": {"clusters": ["bj-1"]}},
            {},
            RefusalReason.NO_ELIGIBLE_OFFER,
            "MemberCluster:spec.cordoned",
            "the members that qualify (bj-1) are cordoned",
        ),
    ],
)
def test_no_eligible_offer_names_the_step(job_spec, voucher_spec, reason, limit, says):
    refusal = price_worst_case(OFFERS, job(**job_spec), voucher(**voucher_spec))
    assert isinstance(refusal, Refusal)
    assert refusal.reason is reason
    assert refusal.limit == limit
    assert refusal.message.startswith("voucher team-a/gpu-2026 cannot price this job: ")
    assert says in refusal.message


def test_no_members_at_all():
    refusal = eligible_offers([], job(), voucher())
    assert isinstance(refusal, Refusal)
    assert refusal.reason is RefusalReason.NO_ELIGIBLE_OFFER
    assert "no member cluster offers any priced GPU" in refusal.message


def test_long_candidate_lists_are_shortened():
    many = [member(f"m-{i:02d}", "r", {"H100": "1.00"}, currency="USD") for i in range(12)]
    refusal = eligible_offers(offers_from_members(many), job(), voucher())
    assert isinstance(refusal, Refusal)
    assert "m-00, m-01, m-02, m-03, m-04, m-05, m-06, m-07 and 4 more" in refusal.message


@pytest.mark.parametrize(
    ("gpus", "runtime", "price"),
    [
        (8, timedelta(hours=2), "200.00"),
        (1, timedelta(seconds=1), "10.00"),
        (3, timedelta(minutes=7), "28.37"),
        (256, timedelta(hours=720), "99.99"),
    ],
)
def test_the_price_cap_is_the_exact_inverse_of_the_worst_case(gpus, runtime, price) -> None:
    hold = worst_case_cost(gpus, runtime, Decimal(price))
    cap = price_cap(hold, gpus, runtime)
    assert cap is not None and cap >= Decimal(price)
    assert worst_case_cost(gpus, runtime, cap) <= hold
    assert worst_case_cost(gpus, runtime, cap + Decimal("0.01")) > hold
