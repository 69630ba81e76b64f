"""The dry-run warning: the same decision as a create, said before the job exists."""

from __future__ import annotations

from suanli.plugin import warnings_of
from suanli.vouchers.estimate import WARNING_PREFIX, estimate_warning
from suanli.vouchers.limits import evaluate
from tests.test_vouchers_limits import NOW, OFFERS, busy, fresh, make_job, make_voucher


def _warning(job_spec: dict[str, object], ledger_of=fresh, **voucher_spec: object) -> str:
    voucher = make_voucher(**voucher_spec)
    job = make_job(**job_spec)
    ledger = ledger_of(voucher)
    return estimate_warning(
        job, voucher, OFFERS, ledger, evaluate(job, voucher, OFFERS, ledger, NOW)
    )


def test_an_admitted_job_gets_its_worst_case_and_what_the_voucher_keeps() -> None:
    # 8 GPUs x 2h x 200.00 (the dearest H100) = 3200.00 of 50000.00.
    text = _warning({"gpuModels": ["H100"]})
    assert text.startswith(f"{WARNING_PREFIX}worst case 3200.00 CNY (8 GPUs x 2h x 200.00")
    assert "would hold it and have 46800.00 CNY left" in text
    assert "spent 0.00, reserved 0.00" in text


def test_a_voucher_short_of_money_says_by_how_much() -> None:
    # busy: 47800.00 spent, 1000.00 reserved: 1200.00 available, 3200.00 asked.
    text = _warning({"gpuModels": ["H100"]}, busy)
    assert "worst case 3200.00 CNY" in text
    assert "would refuse it (spec.amount)" in text
    assert "available 1200.00 CNY" in text and "short by 2000.00 CNY" in text


def test_a_refusing_limit_is_named_with_the_estimate() -> None:
    text = _warning({"gpuModels": ["H100"]}, limits={"maxGPUsPerJob": 4})
    assert "worst case 3200.00 CNY" in text
    assert "would refuse it (spec.limits.maxGPUsPerJob)" in text


def test_a_job_that_cannot_be_priced_says_why() -> None:
    text = _warning({"gpuModels": ["B200"]})
    assert text.startswith(f"{WARNING_PREFIX}no estimate: ")


def test_the_plugin_reads_warnings_from_the_header() -> None:
    class Headers:
        def getlist(self, name: str) -> list[str]:
            return ['299 - "suanli estimate: a \\"quoted\\" word", 299 - "other"']

    assert warnings_of(Headers()) == ['suanli estimate: a "quoted" word', "other"]
    assert warnings_of(None) == []
