"""What the benchmarks share: Prometheus metrics of API servers and of the operator, quantiles,
the operator process's CPU and memory as the kernel counts them, logging and bounded waits.

Benchmarks run as scripts (``.venv/bin/python benchmarks/NAME.py``), so this module is
imported as ``_common`` from the script's own directory.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

from suanli.members.kubeapi import request

WEBHOOK_METRIC: Final = "apiserver_admission_webhook_admission_duration_seconds"
REQUEST_METRIC: Final = "apiserver_request"  # apiserver_request_total, as the parser names it

Buckets = dict[float, float]
Labels = tuple[tuple[str, str], ...]


# --- logging and waiting --------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def wait_until(
    probe: Callable[[], bool],
    timeout: float,
    what: str,
    progress: Callable[[], object] | None = None,
) -> bool:
    """Poll ``probe`` until true or ``timeout``; says so either way (never raises)."""
    started = time.monotonic()
    deadline, said = started + timeout, started
    while True:
        if probe():
            return True
        now = time.monotonic()
        if now >= deadline:
            log(f"gave up after {timeout:.0f}s waiting for {what}")
            return False
        if now - said >= 15:
            state = f": {progress()}" if progress is not None else ""
            log(f"... still waiting for {what} ({now - started:.0f}s){state}")
            said = now
        time.sleep(0.25)


# --- scraping ---------------------------------------------------------------------------------


def api_metrics(api: Any) -> str:
    """The API server's /metrics text, fetched with the client's own credentials."""
    response = request(api, "GET", "/metrics", accept="text/plain", timeout=(5.0, 60.0))
    try:
        return bytes(response.data).decode()
    finally:
        response.release_conn()


def http_metrics(url: str) -> str:
    """A plain-HTTP /metrics endpoint (the operator's)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read()).decode()


def histogram(text: str, family: str, **labels: str) -> Buckets:
    """Cumulative bucket counts of ``family`` summed over every series matching ``labels``."""
    buckets: Buckets = {}
    for metric in text_string_to_metric_families(text):
        if metric.name != family:
            continue
        for sample in metric.samples:
            if not sample.name.endswith("_bucket"):
                continue
            if any(sample.labels.get(key) != value for key, value in labels.items()):
                continue
            bound = float(sample.labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def webhook_buckets(text: str, webhook: str) -> Buckets:
    """The API server's latency histogram of one admission webhook (all operations)."""
    return histogram(text, WEBHOOK_METRIC, name=webhook)


def counter(text: str, family: str) -> dict[Labels, float]:
    """Every series of a counter, by its sorted labels."""
    series: dict[Labels, float] = {}
    for metric in text_string_to_metric_families(text):
        if metric.name != family:
            continue
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                key = tuple(sorted(sample.labels.items()))
                series[key] = series.get(key, 0.0) + sample.value
    return series


def delta(after: Mapping[Any, float], before: Mapping[Any, float]) -> dict[Any, float]:
    """``after - before`` per key (counters and cumulative buckets)."""
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


# --- quantiles --------------------------------------------------------------------------------


def quantile(buckets: Buckets, q: float) -> float:
    """Prometheus-style histogram_quantile: linear interpolation inside the bucket."""
    bounds = sorted(buckets)
    total = buckets.get(math.inf, 0.0)
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return lower


def fraction_within(buckets: Buckets, bound: float) -> float:
    """The share of observations at or under ``bound`` (a bucket boundary)."""
    total = buckets.get(math.inf, 0.0)
    return buckets.get(bound, math.nan) / total if total > 0 else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of raw samples; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[min(rank, len(ordered) - 1)]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1) if not math.isnan(seconds) else math.nan


# --- the operator process ---------------------------------------------------------------------

_CLOCK_TICKS: Final = 100  # USER_HZ; os.sysconf("SC_CLK_TCK") is 100 on every Linux we run on


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used, from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; the fields after it are plain numbers.
    fields = text.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS


def memory_bytes(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of the process, in bytes."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _colon, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


# --- reporting --------------------------------------------------------------------------------


def table(rows: Iterable[Sequence[object]], header: Sequence[str]) -> str:
    """A plain-text table, columns padded to their widest cell."""
    cells = [[str(cell) for cell in header], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def histogram_means(
    text: str, family: str, keys: Sequence[str]
) -> dict[tuple[str, ...], tuple[float, float]]:
    """(sum, count) of a histogram per combination of ``keys`` labels, for mean latencies."""
    sums: dict[tuple[str, ...], list[float]] = {}
    for metric in text_string_to_metric_families(text):
        if metric.name != family:
            continue
        for sample in metric.samples:
            if sample.name.endswith("_sum"):
                slot = 0
            elif sample.name.endswith("_count"):
                slot = 1
            else:
                continue
            key = tuple(sample.labels.get(k, "") for k in keys)
            sums.setdefault(key, [0.0, 0.0])[slot] += sample.value
    return {key: (value[0], value[1]) for key, value in sums.items()}


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) / _CLOCK_TICKS, total / _CLOCK_TICKS
