"""Usage from recorded facts: amounts, the cap across attempts, record names and bodies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from suanli.api.usagerecord import UsageRecord, validate_usagerecord
from suanli.vouchers.recount import recorded_charge
from suanli.vouchers.usage import (
    AttemptFacts,
    JobFacts,
    attempt_usages,
    record_name,
    usage_record,
    voucher_label_value,
)

T0 = datetime(2026, 3, 1, 8, tzinfo=UTC)
JOB = JobFacts("team-a", "train", "6f1c2a3e-5b7d-4c1e-9a0b-2d3e4f5a6b7c", "gpu-2026", "CNY")


def attempt(number: int, minutes: int, price: str = "36.00") -> AttemptFacts:
    start = T0 + timedelta(hours=number)
    return AttemptFacts(
        number,
        "member-a",
        "H100",
        Decimal(price),
        start,
        start + timedelta(minutes=minutes),
        "MemberLost",
        provider="pudong-aicc",
        region="shanghai-pudong",
    )


def test_an_attempt_is_charged_its_gpu_time_at_its_price():
    (usage,) = attempt_usages([attempt(1, 30)], gpus=2, hold=Decimal("100.00"))
    assert (usage.gpu_seconds, usage.metered, usage.amount) == (3600, Decimal("36.00"), 36)
    assert not usage.capped


def test_attempts_together_are_capped_at_the_hold_in_order():
    # 40 + 40 + 40 metered against a hold of 100: the third is charged only what is left.
    usages = attempt_usages(
        [attempt(3, 40, "30.00"), attempt(1, 40, "30.00"), attempt(2, 40, "30.00")],
        gpus=2,
        hold=Decimal("100.00"),
    )
    assert [u.facts.number for u in usages] == [1, 2, 3]
    assert [u.amount for u in usages] == [Decimal("40.00"), Decimal("40.00"), Decimal("20.00")]
    assert [u.capped for u in usages] == [False, False, True]
    # The same facts give the same amounts, every time, in any process.
    again = attempt_usages(
        [attempt(2, 40, "30.00"), attempt(1, 40, "30.00"), attempt(3, 40, "30.00")],
        gpus=2,
        hold=Decimal("100.00"),
    )
    assert again == usages


def test_record_names_are_deterministic_unique_per_uid_and_bounded():
    assert record_name("train", JOB.uid, 2) == f"train-{JOB.uid}-2"
    assert record_name("train", "other-uid", 2) != record_name("train", JOB.uid, 2)
    long = record_name("x" * 253, JOB.uid, 1)
    assert len(long) <= 253 and long == record_name("x" * 253, JOB.uid, 1)
    assert long != record_name("x" * 252 + "y", JOB.uid, 1)


def test_the_record_body_is_a_valid_usage_record_and_reads_back_as_its_charge():
    (usage,) = attempt_usages([attempt(1, 90)], gpus=4, hold=Decimal("150.00"))
    body = usage_record(JOB, usage)
    record = UsageRecord.model_validate(body)
    assert validate_usagerecord(record) == []
    spec = record.spec
    assert (spec.gpu_seconds, spec.metered, spec.amount) == (
        21600,
        Decimal("216.00"),
        Decimal("150.00"),
    )
    assert (spec.provider, spec.region, spec.end_reason) == (
        "pudong-aicc",
        "shanghai-pudong",
        "MemberLost",
    )
    assert body["metadata"]["labels"]["suanli.io/job-uid"] == JOB.uid
    charge = recorded_charge(body)
    assert charge is not None
    assert (charge.uid, charge.attempt, charge.amount, charge.voucher) == (
        JOB.uid,
        1,
        Decimal("150.00"),
        "gpu-2026",
    )


def test_long_voucher_names_fit_in_a_label():
    assert voucher_label_value("gpu-2026") == "gpu-2026"
    value = voucher_label_value("v" * 200)
    assert len(value) <= 63 and value == voucher_label_value("v" * 200)


def test_malformed_records_are_not_read_as_charges():
    assert recorded_charge({"spec": {"job": {"uid": "u"}, "attempt": 1}}) is None
