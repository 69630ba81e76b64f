"""Cost of the decisions the validating webhook makes in memory, by ledger size.

For a voucher whose ledger already holds E jobs, and a voucher programme that already holds E
jobs of 100 companies, measures what one admission runs between its decision and its answer
(no await, no API call; see suanli.handlers.admission):

* ``evaluate``: the voucher's whole check of one job (window, limits, pricing over the
  members' offers, the ledger's balance);
* ``book.admit``: taking the job's hold in the in-memory ledger, as pending;
* ``programme check + hold``: the pool, the company's cap and credit line, then its hold;
* ``to_dict + json``: what the write-behind pays per voucher status write, and its size.

Pure Python, no cluster; figures are printed, never asserted:

    .venv/bin/python benchmarks/vouchers_admission.py --entries 0 1000 2500
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from suanli.api.computejob import ComputeJob
from suanli.api.membercluster import MemberCluster
from suanli.api.voucherquota import VoucherQuota
from suanli.vouchers import (
    Allowed,
    EntryState,
    JobEntry,
    Ledger,
    ReservationRequest,
    VoucherTerms,
    evaluate,
    offers_from_members,
)
from suanli.vouchers.book import VoucherBook
from suanli.vouchers.pricing import PriceOffer
from suanli.vouchers.programs import HoldSplit, ProgramLedger, ProgramTerms

NOW = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
KEY = ("team-a", "gpu-2026")
COMPANIES = 100


def voucher() -> VoucherQuota:
    return VoucherQuota.model_validate(
        {
            "metadata": {"name": KEY[1], "namespace": KEY[0]},
            "spec": {
                "amount": "999999999.00",
                "validUntil": "2027-01-01T00:00:00Z",
                "limits": {"maxConcurrentGPUs": 100000, "maxConcurrentJobs": 5000},
            },
        }
    )


def job(uid: str) -> ComputeJob:
    return ComputeJob.model_validate(
        {
            "metadata": {"name": f"train-{uid}", "namespace": KEY[0], "uid": uid},
            "spec": {
                "replicas": 4,
                "gpusPerReplica": 8,
                "maxRuntime": "8h",
                "template": {"spec": {"containers": [{"name": "main", "image": "train:1"}]}},
            },
        }
    )


def members(count: int) -> list[MemberCluster]:
    return [
        MemberCluster.model_validate(
            {
                "metadata": {"name": f"member-{i}"},
                "spec": {
                    "kubeconfigSecretRef": {"name": f"m{i}", "namespace": "suanli-system"},
                    "region": f"region-{i % 4}",
                    "prices": [
                        {"gpuModel": "H100", "pricePerGPUHour": f"{20 + i}.00"},
                        {"gpuModel": "A800", "pricePerGPUHour": f"{10 + i}.50"},
                    ],
                },
            }
        )
        for i in range(count)
    ]


def ledger_with(terms: VoucherTerms, entries: int) -> Ledger:
    return Ledger(
        terms,
        {
            f"uid-{i}": JobEntry(
                f"team-a/job-{i}", EntryState.RESERVED, Decimal("100.00"), 1, reserved_at=NOW
            )
            for i in range(entries)
        },
    )


def programme_with(entries: int) -> ProgramLedger:
    big = Decimal("1000000000.00")
    ledger = ProgramLedger(ProgramTerms("city", "CNY", big, big, {"city-30": big}))
    for i in range(entries):
        split = HoldSplit(Decimal("30.00"), Decimal("70.00"))
        ledger.hold(f"uid-{i}", f"company-{i % COMPANIES}", "city-30", split)
    return ledger


def timed(function: Callable[[], object], repeats: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), max(samples)


def measure(
    entries: int, the_voucher: VoucherQuota, offers: list[PriceOffer], repeats: int
) -> None:
    """Print the figures of one ledger size."""
    terms = VoucherTerms.from_voucher(the_voucher)
    ledger = ledger_with(terms, entries)
    the_job = job("candidate")
    median, worst = timed(lambda: evaluate(the_job, the_voucher, offers, ledger, NOW), repeats)
    print(f"{entries:>8} {'evaluate (one job)':<28} {median:>10.3f} {worst:>10.3f}")

    decision = evaluate(the_job, the_voucher, offers, ledger, NOW)
    assert isinstance(decision, Allowed), decision
    book = VoucherBook()
    book.load(KEY, ledger)
    uids = itertools.count()
    deadline = NOW + timedelta(seconds=30)

    def admit() -> None:
        uid = f"new-{next(uids)}"
        request = ReservationRequest(uid, f"team-a/{uid}", decision.request.amount, 32, NOW)
        book.admit(KEY, request, deadline)

    median, worst = timed(admit, repeats)
    print(f"{entries:>8} {'book.admit (one hold)':<28} {median:>10.3f} {worst:>10.3f}")

    programme = programme_with(entries)
    split = HoldSplit(Decimal("30.00"), Decimal("70.00"))

    def programme_admit() -> None:
        uid = f"prog-{next(uids)}"
        if not programme.check(uid, "company-7", "city-30", split):
            programme.hold(uid, "company-7", "city-30", split)

    median, worst = timed(programme_admit, repeats)
    print(f"{entries:>8} {'programme check + hold':<28} {median:>10.3f} {worst:>10.3f}")

    median, worst = timed(lambda: json.dumps(ledger.to_dict()), repeats)
    print(f"{entries:>8} {'to_dict + json':<28} {median:>10.3f} {worst:>10.3f}")
    print(f"{entries:>8} {'status JSON bytes':<28} {len(json.dumps(ledger.to_dict())):>10}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[0, 1000, 2500])
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    the_voucher = voucher()
    offers = offers_from_members(members(args.members))
    print(f"{'entries':>8} {'what':<28} {'median ms':>10} {'max ms':>10}")
    for entries in args.entries:
        measure(entries, the_voucher, offers, args.repeats)


if __name__ == "__main__":
    main()
