"""Usage from recorded facts: amounts, the cap across attempts, record names and bodies."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from suanli.api.usagerecord import UsageRecord, validate_usagerecord
from suanli.vouchers.recount import recorded_charge
from suanli.vouchers.usage import (
    AttemptFacts,
    JobFacts,
    attempt_usages,
    label_value,
    record_name,
    usage_record,
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
    assert label_value("gpu-2026") == "gpu-2026"
    value = label_value("v" * 200)
    assert len(value) <= 63 and value == label_value("v" * 200)


def test_malformed_records_are_not_read_as_charges():
    assert recorded_charge({"spec": {"job": {"uid": "u"}, "attempt": 1}}) is None


def test_a_programme_record_carries_the_labels_its_statements_select_it_by():
    split = {
        "name": "shanghai-2026",
        "company": "91310000MA1FL8TQ2X",
        "rule": "city-30",
        "programShare": "10.80",
        "companyShare": "25.20",
    }
    # Ending at 01:00 on April 1st in Shanghai (+08:00) is 17:00 on March 31st in UTC: March's.
    late = AttemptFacts(
        1,
        "member-a",
        "H100",
        Decimal("36.00"),
        T0,
        datetime.fromisoformat("2026-04-01T01:00:00+08:00"),
        "Succeeded",
    )
    (usage,) = attempt_usages([late], gpus=1, hold=Decimal("1000000.00"))
    labels = usage_record(JOB, usage, split)["metadata"]["labels"]
    assert {k: v for k, v in labels.items() if k != "suanli.io/job-uid"} == {
        "suanli.io/voucher": "gpu-2026",
        "app.kubernetes.io/managed-by": "suanli",
        "suanli.io/program": "shanghai-2026",
        "suanli.io/month": "2026-03",
        "suanli.io/company": "91310000MA1FL8TQ2X",
        "suanli.io/center": "member-a",
    }
    assert "suanli.io/program" not in usage_record(JOB, usage)["metadata"]["labels"]


def test_any_company_id_becomes_a_label_value_of_its_own():
    assert label_value("acme-1") == "acme-1"
    spaced, other = label_value("Acme Ltd."), label_value("Acme Ltd,")
    assert spaced.startswith("Acme-Ltd-") and spaced != other
    assert re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", spaced)
    assert len(label_value("x" * 63)) == 63 and len(label_value("x" * 64)) <= 63
    assert re.fullmatch(r"[0-9a-f]{10}", label_value("---"))
