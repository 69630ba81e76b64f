"""Scrape latency and CPU cost of ``suanli exporter`` on stand-in GPUs.

Starts the exporter as a child process on the stand-in NVIDIA library with N GPUs (8 by
default, a full HGX node), scrapes /metrics sequentially, and prints latency percentiles and
the exporter's CPU time per scrape, read from /proc/<pid>/stat (utime + stime) before and after.
Two runs: ``--cache-seconds 0`` (every scrape makes a full NVML pass: the worst case) and the
default cache (scrapes inside one second share a pass).

The stand-in answers NVML calls in microseconds where a real driver may take longer, so the
NVML share of these figures is a lower bound; the HTTP, Python and exposition share is real.

    .venv/bin/python benchmarks/exporter_scrape.py --gpus 8 --scrapes 500
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from suanli.devenv.fakenvml import FakeNvmlState, build_library, sample_gpus
from suanli.devenv.fakenvml.exporter_process import FakeGpuExporter

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Result:
    label: str
    scrapes: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    cpu_ms_per_scrape: float
    body_bytes: int
    series: int
    rss_mib: float


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid``, from /proc (fields 14 and 15, counted after the comm field)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def scrape(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


def measure(label: str, workdir: Path, gpus: int, scrapes: int, extra: list[str]) -> Result:
    state = FakeNvmlState(gpus=sample_gpus(gpus, seed="bench"))
    for index in range(gpus):
        state = state.replace_gpu(index, utilization_gpu=(index * 13) % 101)
    with FakeGpuExporter(
        workdir, state, hostname=f"bench-{label}", extra_args=extra, library=build_library()
    ) as exporter:
        url = exporter.url + "/metrics"
        for _ in range(20):  # warm-up: imports, first NVML pass, connection setup paths
            body = scrape(url)
        cpu_before = cpu_seconds(exporter.pid)
        latencies = []
        for _ in range(scrapes):
            started = time.perf_counter()
            body = scrape(url)
            latencies.append(time.perf_counter() - started)
        cpu_used = cpu_seconds(exporter.pid) - cpu_before
        rss = rss_mib(exporter.pid)
    cut = statistics.quantiles(latencies, n=100, method="inclusive")
    series = sum(
        1 for line in body.decode().splitlines() if line.startswith("DCGM_FI_") and "{" in line
    )
    return Result(
        label=label,
        scrapes=scrapes,
        p50_ms=cut[49] * 1000,
        p99_ms=cut[98] * 1000,
        mean_ms=statistics.fmean(latencies) * 1000,
        cpu_ms_per_scrape=cpu_used / scrapes * 1000,
        body_bytes=len(body),
        series=series,
        rss_mib=rss,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--scrapes", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="suanli-bench-") as tmp:
        results = [
            measure("uncached", Path(tmp), args.gpus, args.scrapes, ["--cache-seconds", "0"]),
            measure("cached-1s", Path(tmp), args.gpus, args.scrapes, []),
        ]
    print(f"suanli exporter, {args.gpus} stand-in GPUs, {args.scrapes} sequential scrapes each")
    header = (
        f"{'run':<10} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'CPU ms/scrape':>14}"
        f" {'DCGM series':>12} {'body KiB':>9} {'RSS MiB':>8}"
    )
    print(header)
    for r in results:
        print(
            f"{r.label:<10} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.mean_ms:>8.2f}"
            f" {r.cpu_ms_per_scrape:>14.2f} {r.series:>12} {r.body_bytes / 1024:>9.1f}"
            f" {r.rss_mib:>8.1f}"
        )


if __name__ == "__main__":
    main()
