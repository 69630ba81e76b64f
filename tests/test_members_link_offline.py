"""A member link without a member: error messages, the probe's verdict, telemetry into the
capacity index, and a clean stop. (The link against real API servers: e2e/test_member_link.py.)
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from aiohttp import web
from kubernetes.client.exceptions import ApiException
from urllib3 import exceptions as urllib3_errors

from suanli.dispatch.capacity import CapacityIndex
from suanli.members.kubeapi import ApiError, describe_error, error_status
from suanli.members.link import LinkEvents, MemberLink, MemberLinkError, readiness_failure
from suanli.telemetry.parse import TelemetrySnapshot

DCGM_3X = (Path(__file__).parent / "data" / "dcgm-exporter-3.x.txt").read_text()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def kubeconfig(port: int) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "x",
                    "cluster": {
                        "server": f"https://127.0.0.1:{port}",
                        "insecure-skip-tls-verify": True,
                    },
                }
            ],
            "users": [{"name": "x", "user": {"token": "not-a-real-token"}}],
            "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
            "current-context": "x",
        }
    )


# --- messages -------------------------------------------------------------------------------------


def test_describe_error_says_what_happened_in_a_few_words() -> None:
    pool = urllib3.PoolManager(retries=False)
    with pytest.raises(urllib3_errors.HTTPError) as refused:
        pool.request("GET", f"http://127.0.0.1:{closed_port()}/readyz", timeout=2)
    assert describe_error(refused.value) == "connection refused"
    assert error_status(refused.value) is None

    timeout = urllib3_errors.ReadTimeoutError(None, "/readyz", "Read timed out.")  # type: ignore[arg-type]
    assert describe_error(timeout) == "no answer within the timeout"
    reset = urllib3_errors.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
    assert describe_error(reset) == "connection lost (reset)"
    cut = urllib3_errors.ProtocolError("Response ended prematurely")
    assert describe_error(cut) == "connection lost (Response ended prematurely)"

    tls = ApiException(status=0, reason="SSLError\ncertificate verify failed")
    assert describe_error(tls) == "TLS error: certificate verify failed"
    assert describe_error(ApiException(status=503, reason="Service Unavailable")) == (
        "HTTP 503 Service Unavailable"
    )

    status = b'{"kind":"Status","reason":"Forbidden","message":"jobs is forbidden","code":403}'
    forbidden = ApiError.from_response(403, "Forbidden", status)
    assert describe_error(forbidden) == "HTTP 403 Forbidden: jobs is forbidden"
    assert error_status(forbidden) == 403
    plain = ApiError.from_response(502, "Bad Gateway", b"upstream down\n")
    assert str(plain) == "HTTP 502 Bad Gateway: upstream down"


def test_readiness_failure_names_the_failed_checks() -> None:
    body = "[+]ping ok\n[-]etcd failed: reason withheld\n[+]log ok\nreadyz check failed\n"
    assert readiness_failure(body) == "etcd failed: reason withheld"
    assert readiness_failure("something else\nmore") == "something else"
    assert readiness_failure("") == "no reason given"


# --- a link to nowhere ----------------------------------------------------------------------------


@asynccontextmanager
async def metrics_server(body: Callable[[], str]) -> AsyncIterator[str]:
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
        yield f"http://{host}:{port}/metrics"
    finally:
        await runner.cleanup()


async def eventually(probe: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return result


def link_threads(name: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"suanli-{name}-")]


def test_unreachable_member_is_reported_and_telemetry_still_flows_into_the_index() -> None:
    reachability: list[tuple[str, bool, str]] = []
    snapshots: list[tuple[str, TelemetrySnapshot]] = []
    callback_threads: set[int] = set()

    def on_reachability(cluster: str, ok: bool, message: str) -> None:
        callback_threads.add(threading.get_ident())
        reachability.append((cluster, ok, message))

    def on_telemetry(cluster: str, snapshot: TelemetrySnapshot) -> None:
        callback_threads.add(threading.get_ident())
        snapshots.append((cluster, snapshot))

    events = LinkEvents(on_reachability=on_reachability, on_telemetry=on_telemetry)

    async def scenario() -> None:
        async with metrics_server(lambda: DCGM_3X) as url:
            link = MemberLink(
                "nowhere",
                kubeconfig(closed_port()),
                events,
                telemetry_endpoints=[url],
                telemetry_interval=0.1,
                probe_interval=0.2,
            )
            await link.start()
            try:
                await eventually(lambda: len(snapshots) >= 2, "two telemetry reads")
                await eventually(lambda: reachability, "the first probe")
                assert reachability == [("nowhere", False, "connection refused")]
                assert not link.reachable
                assert link.reachability_message == "connection refused"
                await eventually(
                    lambda: all(link.watch_errors.values()), "every watch to report its failure"
                )
                assert link.watch_errors["nodes"] == "list Nodes: connection refused"
                assert not link.synced

                # What on_telemetry hands over is what the capacity index takes.
                index = CapacityIndex()
                cluster, snapshot = snapshots[-1]
                index.update_telemetry(cluster, snapshot)
                view = index.node("nowhere", "gpu-node-7")
                assert view is not None and view.telemetry_fresh
                assert [s.answering for s in link.telemetry_statuses] == [True]

                with pytest.raises(MemberLinkError) as failure:
                    await link.get_job("suanli-team", "train-1234")
                assert failure.value.status is None and failure.value.unanswered
                assert str(failure.value) == (
                    "nowhere: get Job suanli-team/train-1234: connection refused"
                )
            finally:
                started = time.monotonic()
                await link.stop()
                assert time.monotonic() - started < 2.5
            await link.stop()  # again: nothing happens
            assert link_threads("nowhere") == []
            # Nothing is reported after stop().
            reported = len(snapshots), len(reachability)
            await asyncio.sleep(0.4)
            assert (len(snapshots), len(reachability)) == reported
            with pytest.raises(MemberLinkError, match="stopped"):
                await link.list_jobs()
            with pytest.raises(MemberLinkError, match="stopped"):
                await link.start()

    asyncio.run(scenario())
    assert callback_threads == {threading.main_thread().ident}


def test_a_kubeconfig_that_is_not_one_fails_start_and_leaves_nothing_running() -> None:
    async def scenario() -> None:
        for text in ("{not yaml", "- a list", yaml.safe_dump({"clusters": []})):
            link = MemberLink("broken", text, LinkEvents())
            with pytest.raises(MemberLinkError, match=r"^broken: kubeconfig"):
                await link.start()
            await link.stop()
        assert link_threads("broken") == []

    asyncio.run(scenario())


def test_remote_operations_need_a_started_link_and_named_objects() -> None:
    async def scenario() -> None:
        link = MemberLink("idle", kubeconfig(closed_port()), LinkEvents())
        with pytest.raises(MemberLinkError, match="not started"):
            await link.get_job("a", "b")
        with pytest.raises(ValueError, match="namespace"):
            await link.create_job({"metadata": {"name": "x"}})
        with pytest.raises(ValueError, match="name"):
            await link.ensure_namespace({"metadata": {}})

    asyncio.run(scenario())
