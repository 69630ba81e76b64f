"""Reading exporters: our own (a real process on the stand-in driver) and dcgm-exporter's text."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from suanli.devenv.fakenvml import FakeNvmlState, build_library, sample_gpus
from suanli.devenv.fakenvml.exporter_process import FakeGpuExporter
from suanli.telemetry.parse import HealthIssue, PodRef, TelemetryError, parse_metrics
from suanli.telemetry.scrape import TelemetryEndpoint, fresh_gpus

DATA = Path(__file__).parent / "data"
MIB = 1024 * 1024
DCGM_3X = (DATA / "dcgm-exporter-3.x.txt").read_text()


@asynccontextmanager
async def text_server(body: Callable[[], str]) -> AsyncIterator[tuple[str, web.AppRunner]]:
    """Serve ``body()`` at /metrics on 127.0.0.1, a free port; yields the URL and the runner."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=body())

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/metrics", runner
    finally:
        await runner.cleanup()


def test_reads_our_exporter_running_on_the_stand_in_driver(tmp_path: Path) -> None:
    state = (
        FakeNvmlState(gpus=sample_gpus(2, seed="reader"))
        .replace_gpu(0, utilization_gpu=25, memory_used=1024 * MIB)
        .replace_gpu(1, utilization_gpu=80, memory_used=70_000 * MIB, ecc_dbe_volatile=1)
    )

    async def scenario(url: str) -> None:
        endpoint = TelemetryEndpoint(url, max_age=30)
        async with aiohttp.ClientSession() as session:
            status = await endpoint.refresh(session)
        assert status.answering and not status.stale
        snapshot = status.snapshot
        assert snapshot is not None
        assert snapshot.exporter_up is True
        assert snapshot.data_at <= snapshot.read_at
        node = snapshot.node("gpu-node-r")
        assert node is not None
        expected = [
            (gpu.index, gpu.uuid, gpu.name, gpu.utilization_gpu, gpu.memory_used // MIB)
            for gpu in state.gpus
        ]
        got = [(g.index, g.uuid, g.model, g.utilization_percent, g.fb_used_mib) for g in node.gpus]
        assert got == expected
        gpu0, gpu1 = node.gpus
        assert gpu0.fb_free_mib == 80 * 1024 - 1024 - 512
        assert gpu0.healthy and gpu0.last_xid == 0
        assert gpu1.health_issues == {HealthIssue.ECC_UNCORRECTED}

    with FakeGpuExporter(
        tmp_path, state, hostname="gpu-node-r", library=build_library()
    ) as exporter:
        asyncio.run(scenario(exporter.url + "/metrics"))


def test_parses_a_dcgm_exporter_scrape() -> None:
    snapshot = parse_metrics(DCGM_3X, read_at=1000.0)
    assert snapshot.exporter_up is None  # dcgm-exporter does not report on itself
    assert snapshot.data_at == 1000.0
    assert [node.name for node in snapshot.nodes] == ["gpu-node-7"]
    idle, busy = snapshot.gpus
    assert (idle.index, idle.uuid, idle.model) == (
        0,
        "GPU-3b7e1d0a-5c1f-4f8e-9d22-6a0c5e4b7f10",
        "NVIDIA H100 80GB HBM3",
    )
    assert (idle.utilization_percent, idle.fb_used_mib, idle.fb_free_mib) == (0, 0, 81004)
    assert idle.fb_reserved_mib is None  # DCGM's blank sentinel is no value, not 9.2e18 MiB
    assert idle.health_issues == {HealthIssue.XID_ERROR}
    assert idle.last_xid == 79
    assert idle.pods == ()

    assert busy.utilization_percent == 97
    assert busy.memory_copy_utilization_percent == 44
    assert (busy.fb_used_mib, busy.fb_free_mib, busy.fb_reserved_mib) == (78817, 2187, 555)
    assert busy.power_w == pytest.approx(612.337)
    assert busy.temperature_c == 58
    # ECC typed counter without _total: still found under its family name.
    assert busy.ecc_uncorrected_volatile == 2
    assert busy.health_issues == {HealthIssue.ECC_UNCORRECTED}
    assert busy.pods == (PodRef(namespace="team-a", name="llm-finetune-0", container="trainer"),)


def test_parses_lower_case_hostname_mig_instances_and_shared_gpus() -> None:
    text = (DATA / "dcgm-exporter-mig-lowercase-hostname.txt").read_text()
    snapshot = parse_metrics(text, read_at=0.0)
    node = snapshot.node("a100-node-2")
    assert node is not None
    rows = [(g.index, g.gpu_instance, g.utilization_percent, g.fb_used_mib) for g in node.gpus]
    assert rows == [(0, "1", 35, 9000), (0, "2", 0, 13), (1, None, 12, 4096)]
    shared = node.gpus[0]
    assert [pod.name for pod in shared.pods] == ["chat-api-6f7d9", "chat-api-k2x8p"]


def test_series_without_a_node_take_the_default_node_or_fail() -> None:
    text = 'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-x",modelName="T4"} 5\n'
    snapshot = parse_metrics(text, read_at=0.0, default_node="node-from-config")
    assert [(g.node, g.utilization_percent) for g in snapshot.gpus] == [("node-from-config", 5)]
    with pytest.raises(TelemetryError, match="Hostname"):
        parse_metrics(text, read_at=0.0)


def test_text_that_is_not_prometheus_is_an_error() -> None:
    with pytest.raises(TelemetryError, match="not Prometheus text"):
        parse_metrics("<html>502 Bad Gateway</html>\n", read_at=0.0)


def test_endpoint_that_stops_answering_is_marked_stale() -> None:
    async def scenario() -> None:
        async with (
            aiohttp.ClientSession() as session,
            text_server(lambda: DCGM_3X) as (url, runner),
        ):
            endpoint = TelemetryEndpoint(url, max_age=60, timeout=2)
            fresh = await endpoint.refresh(session)
            assert fresh.answering and not fresh.stale and fresh.last_error is None
            await runner.cleanup()  # the exporter goes away
            gone = await endpoint.refresh(session)
        assert gone.stale and not gone.answering
        assert gone.consecutive_failures == 1
        assert gone.last_error is not None and url in gone.last_error
        # What it said last is kept for the record, but no longer counts as fresh capacity.
        assert gone.snapshot == fresh.snapshot
        assert fresh_gpus([gone]) == ()
        assert len(fresh_gpus([fresh])) == 2

    asyncio.run(scenario())


def test_endpoint_that_hangs_is_marked_stale_after_the_timeout() -> None:
    async def scenario() -> None:
        release = asyncio.Event()

        async def hang(request: web.Request) -> web.Response:
            await asyncio.wait_for(release.wait(), timeout=10)
            return web.Response(text=DCGM_3X)

        app = web.Application()
        app.router.add_get("/metrics", hang)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        try:
            endpoint = TelemetryEndpoint(f"http://{host}:{port}/metrics", timeout=0.3)
            started = time.monotonic()
            async with aiohttp.ClientSession() as session:
                status = await endpoint.refresh(session)
            assert time.monotonic() - started < 3
            assert status.stale and not status.answering and status.snapshot is None
            assert status.last_error is not None and "no answer within 0.3s" in status.last_error
        finally:
            release.set()
            await runner.cleanup()

    asyncio.run(scenario())


def test_data_older_than_max_age_is_stale_though_the_endpoint_answers() -> None:
    # An exporter whose NVML reads hang keeps serving its last reading; its timestamp tells.
    read_long_ago = time.time() - 300

    def body() -> str:
        return (
            "suanli_exporter_up 1\n"
            f"suanli_exporter_last_read_timestamp_seconds {read_long_ago}\n" + DCGM_3X
        )

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session, text_server(body) as (url, _):
            status = await TelemetryEndpoint(url, max_age=60).refresh(session)
        assert status.answering and status.stale
        assert status.age_seconds is not None and status.age_seconds >= 300

    asyncio.run(scenario())


def test_fresh_data_goes_stale_as_time_passes() -> None:
    now = [1000.0]

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session, text_server(lambda: DCGM_3X) as (url, _):
            endpoint = TelemetryEndpoint(url, max_age=60, clock=lambda: now[0])
            assert not (await endpoint.refresh(session)).stale
        assert not endpoint.status(now=1059.0).stale
        assert endpoint.status(now=1061.0).stale

    asyncio.run(scenario())


def test_exporter_reporting_up_0_counts_as_not_answering() -> None:
    async def scenario() -> None:
        body = "suanli_exporter_up 0\n"
        async with aiohttp.ClientSession() as session, text_server(lambda: body) as (url, _):
            status = await TelemetryEndpoint(url).refresh(session)
        assert status.stale and not status.answering
        assert status.last_error is not None and "up=0" in status.last_error

    asyncio.run(scenario())
