"""Cost of the voucher decisions an admission webhook makes, by ledger size and batch size.

For a voucher whose ledger already has E entries, measures:

* ``evaluate``: the whole admission check of one job (limits, pricing over the members'
  offers, the ledger check), as the webhook runs it per request;
* ``commit_batch`` of B queued requests, as the per-voucher queue runs it per status write;
* ``to_dict`` + JSON encoding and ``from_dict`` of the ledger, the persistence round trip
  each status write and read pays, and the JSON size the status would carry.

Pure Python, no cluster:

    .venv/bin/python benchmarks/vouchers_admission.py --entries 0 1000 10000 --batch 1 10 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial

from suanli.api.computejob import ComputeJob
from suanli.api.membercluster import MemberCluster
from suanli.api.voucherquota import VoucherQuota
from suanli.vouchers import (
    EntryState,
    JobEntry,
    Ledger,
    ReservationRequest,
    VoucherTerms,
    commit_batch,
    evaluate,
    offers_from_members,
)

NOW = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)


def voucher() -> VoucherQuota:
    return VoucherQuota.model_validate(
        {
            "metadata": {"name": "gpu-2026", "namespace": "team-a"},
            "spec": {
                "amount": "999999999.00",
                "validUntil": "2027-01-01T00:00:00Z",
                "limits": {"maxConcurrentGPUs": 100000, "maxConcurrentJobs": 10000},
            },
        }
    )


def job() -> ComputeJob:
    return ComputeJob.model_validate(
        {
            "metadata": {"name": "train", "namespace": "team-a"},
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
    held = JobEntry(EntryState.RESERVED, Decimal("100.00"), 1, reserved_at=NOW)
    return Ledger(terms, {f"team-a/job-{i}": held for i in range(entries)})


def timed(function: Callable[[], object], repeats: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), max(samples)


def _encode(ledger: Ledger) -> str:
    return json.dumps(ledger.to_dict())


def _decode(terms: VoucherTerms, text: str) -> Ledger:
    return Ledger.from_dict(terms, json.loads(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[0, 1000, 10000])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    the_voucher, the_job = voucher(), job()
    offers = offers_from_members(members(args.members))
    terms = VoucherTerms.from_voucher(the_voucher)
    print(f"{'entries':>8} {'what':<28} {'median ms':>10} {'max ms':>10}")
    for entries in args.entries:
        ledger = ledger_with(terms, entries)
        median, worst = timed(
            partial(evaluate, the_job, the_voucher, offers, ledger, NOW), args.repeats
        )
        print(f"{entries:>8} {'evaluate (one job)':<28} {median:>10.3f} {worst:>10.3f}")
        for size in args.batch:
            requests = [
                ReservationRequest(f"team-a/new-{i}", Decimal("7000.00"), 32, NOW)
                for i in range(size)
            ]
            median, worst = timed(partial(commit_batch, ledger, requests), args.repeats)
            label = f"commit_batch ({size})"
            print(f"{entries:>8} {label:<28} {median:>10.3f} {worst:>10.3f}")
        text = json.dumps(ledger.to_dict())
        median, worst = timed(partial(_encode, ledger), args.repeats)
        print(f"{entries:>8} {'to_dict + json':<28} {median:>10.3f} {worst:>10.3f}")
        median, worst = timed(partial(_decode, terms, text), args.repeats)
        print(f"{entries:>8} {'json + from_dict':<28} {median:>10.3f} {worst:>10.3f}")
        print(f"{entries:>8} {'status JSON bytes':<28} {len(text):>10}")


if __name__ == "__main__":
    main()
