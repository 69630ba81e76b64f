"""Assemble and run the Kopf operator: settings, the webhook server, shared run-time state.

Handler modules register themselves with Kopf when imported; they are imported here, by name,
so the operator's surface is this list (no star imports, no discovery).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
import prometheus_client

from suanli import malloc, metrics, tls_buffers
from suanli.api.meta import GROUP
from suanli.certs import generate_webhook_certificates
from suanli.handlers import (  # noqa: F401
    admission,
    computejob,
    membercluster,
    program_vouchers,
    programs,
    takeover,
    voucherquota,
)
from suanli.handlers.runtime import Runtime
from suanli.handlers.takeover import mark_pod
from suanli.handlers.webhook_server import WebhookServer
from suanli.kube import Hub, load_api_client
from suanli.leadership import LeaseElector, LeaseSettings, default_identity
from suanli.options import OperatorOptions
from suanli.probes import HealthServer, StandbyWebhook

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _TLS:
    certfile: Path
    keyfile: Path
    cafile: Path  # the CA for the webhook configurations' caBundle (the certificate itself
    # when there is no ca.crt: a self-signed one)


CERT_CHECK_INTERVAL = 10.0
"""Seconds between reads of the webhook's certificate files: a renewed certificate (cert-manager
rewrites the Secret's files in place) is served within this long, without a restart, and the
webhook configurations the operator manages get the new CA."""


def _webhook_tls(options: OperatorOptions) -> _TLS:
    """Use the key pair in --webhook-cert-dir, or make one (with its CA) when there is none."""
    directory = options.webhook_cert_dir or Path(tempfile.mkdtemp(prefix="suanli-webhook-"))
    cert, key, ca = directory / "tls.crt", directory / "tls.key", directory / "ca.crt"
    if not (cert.exists() and key.exists()):
        hosts = tuple(dict.fromkeys((options.webhook_host, "127.0.0.1", "localhost")))
        generate_webhook_certificates(directory, hosts=hosts)
        logger.info("generated a webhook certificate for %s in %s", ", ".join(hosts), directory)
    return _TLS(cert, key, ca if ca.exists() else cert)


@kopf.on.login()
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """Kopf connects with the same credentials as our own client (one source: --kubeconfig).

    Kopf's own kubeconfig login reads $KUBECONFIG as the client library saw it at import time,
    before `suanli run` could set it; handing over the loaded configuration avoids that.
    """
    runtime: Runtime = memo.runtime
    configuration = runtime.hub.api.configuration
    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    scheme, _space, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or ("Bearer" if token else None),
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


LAG_PROBE_INTERVAL = 0.25
KOPF_OBJECT_WORKERS = 256
"""Objects whose events Kopf handles at once (see build_settings)."""


@kopf.on.startup()
async def probe_event_loop_lag(memo: kopf.Memo, **_: Any) -> None:
    """Measure how late the event loop runs a task that is due (suanli_event_loop_lag_seconds):
    every handler, the webhook and the dispatcher share that loop, so its lag is theirs."""
    runtime: Runtime = memo.runtime

    async def probe() -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LAG_PROBE_INTERVAL)
            lag = loop.time() - started - LAG_PROBE_INTERVAL
            metrics.EVENT_LOOP_LAG.observe(max(0.0, lag))

    runtime.spawn(probe())


def build_settings(options: OperatorOptions, tls: _TLS) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # Our CRD schemas have no room for Kopf's status fields: keep its bookkeeping in
    # annotations under our own prefix, and our own finalizer name.
    # Not the ComputeJob finalizer (suanli.io/finalizer), which the operator holds itself:
    # Kopf removes its own finalizer from objects that have no deletion handler.
    settings.persistence.finalizer = f"{GROUP}/kopf-finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Handler log lines are not Events: tenants get the Events we write on purpose.
    settings.posting.level = logging.ERROR
    settings.execution.max_workers = 16
    # Kopf gives every object with events in flight a worker of its own, holding the object's
    # latest event, which then idles 5 s before it ends. Unbounded, a burst of thousands of
    # new jobs made thousands of workers, each with a body parsed and waiting, tens of MB
    # ahead of the handlers. Bounded, Kopf stops reading the watch until a worker is free: the
    # API server keeps the events meanwhile. The shorter idle time keeps the bound from
    # limiting how many new objects a second get a worker.
    settings.queueing.worker_limit = KOPF_OBJECT_WORKERS
    settings.queueing.idle_timeout = 1.0
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300

    settings.admission.server = WebhookServer(
        addr=options.webhook_host,
        port=options.webhook_port,
        certfile=str(tls.certfile),
        pkeyfile=str(tls.keyfile),
        cafile=str(tls.cafile),
        file_check_interval=CERT_CHECK_INTERVAL,
    )
    settings.admission.managed = options.managed_webhook_config
    return settings


class _GCTimer:
    """Observes every garbage collection: its pause (wall time) and the CPU it used."""

    def __init__(self) -> None:
        self._started = 0.0
        self._cpu = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started, self._cpu = time.perf_counter(), time.thread_time()
        else:
            pause = time.perf_counter() - self._started
            metrics.GC_PAUSE.labels(str(info.get("generation", ""))).observe(pause)
            metrics.GC_CPU.inc(max(0.0, time.thread_time() - self._cpu))


# Python's default (700, 10, 10) collects the youngest generation every 700 allocations net,
# and a full collection walks every object the operator holds: with thousands of jobs, watch
# events and pydantic models in flight that was a fifth of the operator's CPU and pauses of
# up to a second on the event loop (measured by benchmarks/federation_scale.py). Collecting
# less often costs a little memory for garbage that waits longer; the objects made while
# starting up (modules, schemas, the handlers' registry) are frozen out of collection.
GC_THRESHOLDS = (20_000, 20, 20)


def tune_garbage_collection() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    gc.callbacks.append(_GCTimer())


def run(options: OperatorOptions, liveness_endpoint: str | None = None) -> int:
    """Run until interrupted (SIGINT/SIGTERM), or until this replica stops leading (exit
    status 1: its container restarts and stands by)."""
    malloc.limit_arenas()
    tls_buffers.limit_read_buffers()
    tune_garbage_collection()
    # A line per webhook call the API server makes (several per job) says nothing the
    # admission metrics do not; failures are still logged by Kopf.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Likewise Kopf's "Handler ... succeeded" per object event (several per job, and their
    # formatting was a visible share of the operator's CPU in a burst); failures still show.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    runtime = Runtime(options=options, hub=Hub(load_api_client(options.kubeconfig)))
    if options.metrics_port is not None:
        prometheus_client.start_http_server(options.metrics_port, addr=options.metrics_host)
    return asyncio.run(_stand_by_then_lead(options, runtime, liveness_endpoint))


def _health_address(endpoint: str) -> tuple[str, int]:
    url = urllib.parse.urlsplit(endpoint)
    if url.port is None:
        raise ValueError(f"--liveness {endpoint}: give a port, e.g. http://0.0.0.0:8080/healthz")
    return url.hostname or "0.0.0.0", url.port


async def _stand_by_then_lead(
    options: OperatorOptions, runtime: Runtime, liveness_endpoint: str | None
) -> int:
    tls = _webhook_tls(options)
    health = None
    if liveness_endpoint:
        health = HealthServer(*_health_address(liveness_endpoint), runtime.gate)
        await health.start()
    elector = LeaseElector(
        runtime.hub,
        LeaseSettings(
            namespace=options.lease_namespace,
            name=options.lease_name,
            identity=options.pod_name or default_identity(),
            duration=options.lease_duration,
            renew_deadline=options.lease_renew_deadline,
            retry=options.lease_retry,
        ),
    )
    runtime.elector = elector
    try:
        if not await _stand_by(options, runtime, elector, tls):
            return 0
        return await _lead(options, runtime, elector, tls)
    finally:
        if health is not None:
            await health.stop()
        await runtime.hub.close()


async def _stand_by(
    options: OperatorOptions, runtime: Runtime, elector: LeaseElector, tls: _TLS
) -> bool:
    """Answer reviews with "retry" until this replica holds the Lease (True) or is told to
    stop (False)."""
    runtime.gate.close("this replica stands by; the admission leader answers")
    await mark_pod(runtime, leading=False)
    standby = StandbyWebhook(
        options.webhook_host,
        options.webhook_port,
        tls.certfile,
        tls.keyfile,
        lambda: runtime.gate.refusal,
    )
    await standby.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    campaign = asyncio.create_task(elector.acquire())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({campaign, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signal_number)
        stopping.cancel()
        await standby.stop()
    if not campaign.done():
        campaign.cancel()
        logger.info("stopped while standing by")
        return False
    runtime.takeover = campaign.result()
    return True


async def _lead(
    options: OperatorOptions, runtime: Runtime, elector: LeaseElector, tls: _TLS
) -> int:
    """Run the operator (Kopf) while this replica holds the Lease."""
    runtime.gate.close("this replica is taking over admission")
    lost = asyncio.Event()

    async def keep() -> None:
        if await elector.keep():
            runtime.gate.close("this replica lost the admission lease")
            lost.set()

    keeper = asyncio.create_task(keep())
    try:
        await kopf.operator(
            settings=build_settings(options, tls),
            clusterwide=True,
            standalone=True,
            memo=kopf.Memo(runtime=runtime),
            stop_flag=lost,
        )
    finally:
        keeper.cancel()
    if lost.is_set():
        logger.error("stopped leading: exiting, to stand by again after a restart")
        return 1
    return 0
