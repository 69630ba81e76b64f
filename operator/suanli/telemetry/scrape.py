"""Scraping accelerator exporters over HTTP (:mod:`.parse` reads what they answer).

:class:`TelemetryEndpoint` fetches one exporter with aiohttp (the operator is async) under a
timeout and keeps its :class:`EndpointStatus`: answering or not, how old its data is, stale or
fresh. The last good snapshot is kept when the endpoint stops answering, so the caller decides
how to discount it; ``stale`` is the verdict for capacity decisions.

Data age is taken from the exporter's own ``suanli_exporter_last_read_timestamp_seconds`` when
present (an exporter whose NVML reads hang keeps answering with old data), else from the fetch
time. The former compares clocks of two hosts: fine with NTP, and ``max_age`` is in tens of
seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

import aiohttp

from suanli.api.membercluster import endpoint_node
from suanli.telemetry.parse import (
    DEFAULT_MAX_AGE,
    GpuTelemetry,
    TelemetryError,
    TelemetrySnapshot,
    parse_metrics,
)

DEFAULT_TIMEOUT: Final = 5.0


async def fetch_metrics(
    session: aiohttp.ClientSession,
    url: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    default_node: str | None = None,
    clock: Callable[[], float] = time.time,
) -> TelemetrySnapshot:
    """GET ``url`` and parse it; every failure is a :class:`TelemetryError`."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                raise TelemetryError(f"{url} answered HTTP {response.status}")
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError) as error:
        reason = f"no answer within {timeout:g}s" if isinstance(error, TimeoutError) else error
        raise TelemetryError(f"cannot read {url}: {reason}") from None
    return parse_metrics(text, read_at=clock(), default_node=default_node)


@dataclass(frozen=True)
class EndpointStatus:
    """What is known about one exporter endpoint at a moment."""

    url: str
    answering: bool  # the last attempt succeeded
    stale: bool  # no usable data: never read, not answering, or data older than max_age
    snapshot: TelemetrySnapshot | None  # the last good one, kept when the endpoint fails
    age_seconds: float | None  # of the snapshot's data
    last_error: str | None = None
    consecutive_failures: int = 0


class TelemetryEndpoint:
    """One exporter the hub reads: fetches it and judges whether its data can be trusted.

    Args:
        url: The exporter's metrics URL.
        max_age: Data older than this many seconds is stale.
        timeout: Longest one fetch may take.
        default_node: Node name for series without a Hostname label.
        clock: Wall clock, epoch seconds.
    """

    def __init__(
        self,
        url: str,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        timeout: float = DEFAULT_TIMEOUT,
        default_node: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.max_age = max_age
        self.timeout = timeout
        # "#node=<name>" names the node of an exporter whose series do not (npu-exporter).
        self._fetch_url = url.split("#", 1)[0]
        self._default_node = default_node or endpoint_node(url)
        self._clock = clock
        self._snapshot: TelemetrySnapshot | None = None
        self._answering = False
        self._error: str | None = "not read yet"
        self._failures = 0

    async def refresh(self, session: aiohttp.ClientSession) -> EndpointStatus:
        """Fetch the endpoint once and return the resulting status."""
        try:
            snapshot = await fetch_metrics(
                session,
                self._fetch_url,
                timeout=self.timeout,
                default_node=self._default_node,
                clock=self._clock,
            )
        except TelemetryError as error:
            self._record_failure(str(error))
        else:
            if snapshot.exporter_up is False:
                # The exporter answers but cannot read NVML: its GPU data is gone, not zero.
                self._record_failure(f"{self.url} reports it cannot read the GPUs (up=0)")
            else:
                self._snapshot = snapshot
                self._answering = True
                self._error = None
                self._failures = 0
        return self.status()

    def status(self, now: float | None = None) -> EndpointStatus:
        """The status at ``now`` (default: the clock): data ages even without refreshes."""
        now = self._clock() if now is None else now
        age = None if self._snapshot is None else max(0.0, now - self._snapshot.data_at)
        return EndpointStatus(
            url=self.url,
            answering=self._answering,
            stale=age is None or not self._answering or age > self.max_age,
            snapshot=self._snapshot,
            age_seconds=age,
            last_error=self._error,
            consecutive_failures=self._failures,
        )

    def _record_failure(self, message: str) -> None:
        self._answering = False
        self._error = message
        self._failures += 1


def fresh_gpus(statuses: Iterable[EndpointStatus]) -> tuple[GpuTelemetry, ...]:
    """The GPUs of every endpoint whose data is fresh: what capacity decisions may use."""
    return tuple(
        gpu
        for status in statuses
        if not status.stale and status.snapshot is not None
        for gpu in status.snapshot.gpus
    )
