"""The GPU exporter: NVML readings served as Prometheus metrics, named as dcgm-exporter names them.

One exporter runs per GPU node (a DaemonSet in member clusters). Each scrape asks
:class:`CachedSampler` for a reading: a reading younger than ``cache_seconds`` is reused, so
several scrapers (the hub, a local Prometheus) cost one NVML pass; otherwise one read runs in a
worker thread and the scrape waits for it at most ``read_timeout`` seconds. If NVML hangs, the
scrape is answered with the previous reading (its timestamp shows its age) instead of hanging,
and no second read piles up behind the stuck one.

The HTTP server answers ``/metrics`` (also ``/``) and ``/healthz``; the latter never touches
NVML, so it only says the process serves, which is what a liveness probe should ask.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from types import FrameType
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from suanli import __version__
from suanli.errors import UserFacingError
from suanli.telemetry import names
from suanli.telemetry.nvml import (
    ErrorCounts,
    GpuReading,
    NodeReading,
    NvmlReader,
    SystemInfo,
    XidWatcher,
)

log = logging.getLogger(__name__)

_MIB: Final = 1024 * 1024
# Counted in read_errors_total when a scrape gave up waiting for NVML.
READ_TIMEOUT_CALL: Final = "read_timeout"
_GPU_LABELS: Final = (
    names.LABEL_GPU,
    names.LABEL_UUID,
    names.LABEL_PCI_BUS_ID,
    names.LABEL_DEVICE,
    names.LABEL_MODEL,
    names.LABEL_HOSTNAME,
)


@dataclass(frozen=True)
class ExporterConfig:
    """How to serve; every field is a command-line option of ``suanli exporter``."""

    host: str = "127.0.0.1"
    port: int = names.DEFAULT_PORT
    hostname: str = "localhost"
    cache_seconds: float = 1.0
    read_timeout: float = 2.0


class CachedSampler:
    """Hands out NVML readings, at most one read in flight, never waiting past a timeout."""

    def __init__(
        self,
        read: Callable[[], NodeReading],
        *,
        cache_seconds: float,
        read_timeout: float,
        errors: ErrorCounts,
    ) -> None:
        self._read = read
        self._cache_seconds = cache_seconds
        self._read_timeout = read_timeout
        self._errors = errors
        self._lock = threading.Lock()
        self._latest: NodeReading | None = None
        self._latest_at = 0.0  # monotonic time the latest reading finished
        self._in_flight: threading.Event | None = None

    def get(self) -> NodeReading | None:
        """The freshest reading available within the timeout; None before the first one."""
        with self._lock:
            if (
                self._latest is not None
                and time.monotonic() - self._latest_at < self._cache_seconds
            ):
                return self._latest
            done = self._in_flight
            if done is None:
                done = self._in_flight = threading.Event()
                # A daemon thread: a read stuck in the driver must not block the process exit.
                threading.Thread(
                    target=self._run, args=(done,), name="nvml-read", daemon=True
                ).start()
        if not done.wait(self._read_timeout):
            self._errors.add(READ_TIMEOUT_CALL)
            log.warning(
                "NVML read still running after %.1fs; serving the last reading", self._read_timeout
            )
        with self._lock:
            return self._latest

    def _run(self, done: threading.Event) -> None:
        reading: NodeReading | None = None
        try:
            reading = self._read()
        except Exception:
            log.exception("NVML read failed unexpectedly")
        finally:
            with self._lock:
                if reading is not None:
                    self._latest = reading
                    self._latest_at = time.monotonic()
                self._in_flight = None
            done.set()


class GpuCollector:
    """A prometheus_client collector that turns the sampler's reading into metric families."""

    def __init__(
        self,
        sampler: CachedSampler,
        errors: ErrorCounts,
        *,
        hostname: str,
        system: SystemInfo,
    ) -> None:
        self._sampler = sampler
        self._errors = errors
        self._hostname = hostname
        self._system = system

    def describe(self) -> Iterable[Metric]:
        # Present so that registering the collector does not trigger an NVML read.
        return ()

    def collect(self) -> Iterator[Metric]:
        reading = self._sampler.get()
        if reading is not None:
            yield from gpu_families(reading, self._hostname)
        yield from self._own_families(reading)

    def _own_families(self, reading: NodeReading | None) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            names.EXPORTER_UP,
            "1 when the latest NVML reading could enumerate the GPUs, else 0.",
        )
        up.add_metric([], 1.0 if reading is not None and reading.enumerated else 0.0)
        yield up
        if reading is not None:
            yield GaugeMetricFamily(
                names.EXPORTER_LAST_READ,
                "Wall-clock time (epoch seconds) when the served NVML reading was taken.",
                value=reading.read_at,
            )
            yield GaugeMetricFamily(
                names.EXPORTER_READ_DURATION,
                "Seconds the served NVML reading took.",
                value=reading.duration_s,
            )
        errors = CounterMetricFamily(
            names.EXPORTER_READ_ERRORS,
            "Failed NVML calls by C function name (read_timeout: a scrape gave up waiting).",
            labels=[names.LABEL_CALL],
        )
        for call, count in sorted(self._errors.snapshot().items()):
            errors.add_metric([call], float(count))
        yield errors
        info = GaugeMetricFamily(
            names.EXPORTER_INFO,
            "Always 1; the labels say which exporter and driver serve these metrics.",
            labels=["version", "driver_version", "nvml_version", names.LABEL_HOSTNAME],
        )
        info.add_metric(
            [__version__, self._system.driver_version, self._system.nvml_version, self._hostname],
            1.0,
        )
        yield info


# (metric, help, value in the metric's unit or None to skip the series)
_GpuField = tuple[str, str, Callable[[GpuReading], float | None]]


def _mib(value: int | None) -> float | None:
    # dcgm-exporter reports framebuffer sizes as whole MiB.
    return None if value is None else float(value // _MIB)


_GPU_FIELDS: Final[tuple[_GpuField, ...]] = (
    (names.GPU_UTIL, "GPU utilization in percent.", lambda g: g.utilization_gpu),
    (
        names.MEM_COPY_UTIL,
        "Memory bandwidth utilization in percent.",
        lambda g: g.utilization_memory,
    ),
    (
        names.FB_USED,
        "Framebuffer memory allocated, in MiB.",
        lambda g: _mib(g.memory.used if g.memory else None),
    ),
    (
        names.FB_FREE,
        "Framebuffer memory free, in MiB.",
        lambda g: _mib(g.memory.free if g.memory else None),
    ),
    (
        names.FB_RESERVED,
        "Framebuffer memory reserved by the driver, in MiB.",
        lambda g: _mib(g.memory.reserved if g.memory else None),
    ),
    (names.GPU_TEMP, "GPU temperature in degrees C.", lambda g: g.temperature_c),
    (
        names.POWER_USAGE,
        "Power draw in W.",
        lambda g: None if g.power_mw is None else g.power_mw / 1000.0,
    ),
    (names.XID_ERRORS, "Code of the last XID error seen, 0 if none.", lambda g: g.last_xid),
    (
        names.ECC_SBE_VOL_TOTAL,
        "Corrected (single-bit) ECC errors since the driver loaded.",
        lambda g: g.ecc_sbe_volatile,
    ),
    (
        names.ECC_DBE_VOL_TOTAL,
        "Uncorrected (double-bit) ECC errors since the driver loaded.",
        lambda g: g.ecc_dbe_volatile,
    ),
)


def gpu_families(reading: NodeReading, hostname: str) -> Iterator[Metric]:
    """The per-GPU metric families of one reading, with dcgm-exporter's names and labels.

    All are gauges. dcgm-exporter types the ECC totals as counters without the ``_total``
    suffix, which prometheus_client cannot produce; the value is the same, and readers that
    look families up by name (ours does) see no difference.
    """
    for metric, help_text, value_of in _GPU_FIELDS:
        family = GaugeMetricFamily(metric, help_text, labels=_GPU_LABELS)
        for gpu in reading.gpus:
            value = value_of(gpu)
            if value is None:
                continue  # the call failed or is unsupported: no series beats a wrong one
            identity = gpu.identity
            family.add_metric(
                [
                    str(identity.index),
                    identity.uuid,
                    identity.pci_bus_id,
                    f"nvidia{identity.index}",
                    identity.name,
                    hostname,
                ],
                float(value),
            )
        yield family


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow scrape never holds up /healthz."""

    daemon_threads = True


class _IPv6ThreadingWSGIServer(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # One line per scrape every few seconds would drown the exporter's real messages.
        pass


def make_app(registry: CollectorRegistry) -> WSGIApplication:
    """The WSGI application: /metrics and / serve the registry, /healthz answers ok."""
    metrics: WSGIApplication = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        if path in ("/", "/metrics"):
            return metrics(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics or /healthz\n"]

    return app


def serve(app: WSGIApplication, host: str, port: int) -> WSGIServer:
    """Bind ``host:port`` (port 0: any free port) and return the server, not yet serving."""
    server_class = _IPv6ThreadingWSGIServer if ":" in host else _ThreadingWSGIServer
    try:
        return make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    except OSError as error:
        raise UserFacingError(f"cannot listen on {host}:{port}: {error.strerror}") from None


def run_exporter(config: ExporterConfig) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit status.

    Raises:
        NvmlUnavailableError: NVML cannot start (no library, no driver).
        UserFacingError: the port cannot be bound.
    """
    errors = ErrorCounts()
    reader = NvmlReader(errors)
    system = reader.open()
    log.info(
        "NVML %s, driver %s: %d GPU(s)",
        system.nvml_version,
        system.driver_version,
        system.gpu_count,
    )
    xids = XidWatcher(errors)
    server: WSGIServer | None = None
    http: threading.Thread | None = None
    try:
        reader.watch_xids(xids)
        sampler = CachedSampler(
            reader.read,
            cache_seconds=config.cache_seconds,
            read_timeout=config.read_timeout,
            errors=errors,
        )
        registry = CollectorRegistry()
        registry.register(GpuCollector(sampler, errors, hostname=config.hostname, system=system))
        ProcessCollector(registry=registry)
        server = serve(make_app(registry), config.host, config.port)
        stop = threading.Event()

        def request_stop(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        http = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )
        http.start()
        bound_host, bound_port = server.server_address[:2]
        log.info(
            "serving http://%s:%s/metrics as Hostname=%s", bound_host, bound_port, config.hostname
        )
        stop.wait()
        log.info("stopping")
    finally:
        if server is not None:
            if http is not None:
                server.shutdown()  # only after serve_forever started: it would wait forever
            server.server_close()
        xids.stop()
        reader.close()
    return 0
