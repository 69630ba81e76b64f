"""The hub client: paths, methods, credentials, error types and background Events, against a
small local HTTP server standing in for the API server."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from suanli import kube
from suanli.kube import ConflictError, Hub, NotFoundError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeApiServer:
    """Records every request; answers with what ``answer`` returns."""

    def __init__(self, answer: Handler | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answer = answer
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "headers": dict(request.headers),
                "body": json.loads(body) if body else None,
            }
        )
        if self.answer is not None:
            return await self.answer(request)
        return web.json_response({"kind": "Thing", "metadata": {"name": "x"}, "items": []})

    async def __aenter__(self) -> FakeApiServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    def hub(self, token: str | None = "s3cret") -> Hub:
        configuration = client.Configuration(host=f"http://127.0.0.1:{self.port}")
        if token:
            configuration.api_key = {"authorization": token}
            configuration.api_key_prefix = {"authorization": "Bearer"}
        return Hub(client.ApiClient(configuration))


def run(coroutine: Awaitable[Any]) -> Any:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_requests_go_to_the_right_paths_with_the_credentials() -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with FakeApiServer() as server:
            hub = server.hub()
            await hub.get("computejobs", "team-a", "train")
            await hub.list("voucherquotas")
            await hub.list("computejobs", "team-a")
            await hub.get("memberclusters", None, "member-a")
            await hub.patch_status("computejobs", "team-a", "train", {"status": {"phase": "X"}})
            await hub.replace_status(
                "voucherquotas",
                {"metadata": {"namespace": "team-a", "name": "v", "resourceVersion": "7"}},
            )
            await hub.close()
            return server.requests

    requests = run(scenario())
    base = "/apis/suanli.io/v1alpha1"
    assert [(r["method"], r["path"]) for r in requests] == [
        ("GET", f"{base}/namespaces/team-a/computejobs/train"),
        ("GET", f"{base}/voucherquotas"),
        ("GET", f"{base}/namespaces/team-a/computejobs"),
        ("GET", f"{base}/memberclusters/member-a"),
        ("PATCH", f"{base}/namespaces/team-a/computejobs/train/status"),
        ("PUT", f"{base}/namespaces/team-a/voucherquotas/v/status"),
    ]
    assert all(r["headers"]["Authorization"] == "Bearer s3cret" for r in requests)
    patch, replace = requests[4], requests[5]
    assert patch["headers"]["Content-Type"] == "application/merge-patch+json"
    assert patch["body"] == {"status": {"phase": "X"}}
    assert replace["body"]["metadata"]["resourceVersion"] == "7"


@pytest.mark.parametrize(
    ("status", "expected"),
    [(409, ConflictError), (404, NotFoundError), (500, ApiException), (422, ApiException)],
)
def test_error_statuses_raise_the_same_types_as_before(status: int, expected: type) -> None:
    async def answer(_: web.Request) -> web.StreamResponse:
        document = {"kind": "Status", "reason": "Because", "message": "it says no", "code": status}
        return web.json_response(document, status=status)

    async def scenario() -> None:
        async with FakeApiServer(answer) as server:
            hub = server.hub()
            try:
                await hub.get("computejobs", "team-a", "train")
            finally:
                await hub.close()

    with pytest.raises(expected) as raised:
        run(scenario())
    if isinstance(raised.value, ApiException):
        assert raised.value.status == status
        assert "it says no" in str(raised.value.reason)


def test_secret_data_is_decoded() -> None:
    async def answer(_: web.Request) -> web.StreamResponse:
        data = {"kubeconfig": base64.b64encode(b"apiVersion: v1").decode()}
        return web.json_response({"kind": "Secret", "data": data})

    async def scenario() -> tuple[dict[str, str], str]:
        async with FakeApiServer(answer) as server:
            hub = server.hub(token=None)
            secret = await hub.secret("suanli-system", "member-a-kubeconfig")
            await hub.close()
            return secret, server.requests[0]["path"]

    secret, path = run(scenario())
    assert secret == {"kubeconfig": "apiVersion: v1"}
    assert path == "/api/v1/namespaces/suanli-system/secrets/member-a-kubeconfig"


REGARDING = {
    "apiVersion": "suanli.io/v1alpha1",
    "kind": "ComputeJob",
    "metadata": {"name": "train", "namespace": "team-a", "uid": "u-1"},
}


def test_an_event_is_written_in_the_background() -> None:
    released = asyncio.Event()

    async def answer(_: web.Request) -> web.StreamResponse:
        await released.wait()
        return web.json_response({"kind": "Event"}, status=201)

    async def scenario() -> list[dict[str, Any]]:
        async with FakeApiServer(answer) as server:
            hub = server.hub()
            # Returns although the server has not answered (it waits for `released`).
            await asyncio.wait_for(
                hub.event(REGARDING, reason="Placed", message="on member-a"), timeout=1
            )
            released.set()
            await hub.close()  # waits for pending Events (briefly)
            return server.requests

    requests = run(scenario())
    assert len(requests) == 1
    event = requests[0]["body"]
    assert requests[0]["path"] == "/api/v1/namespaces/team-a/events"
    assert event["reason"] == "Placed" and event["type"] == "Normal"
    assert event["involvedObject"] == {
        "apiVersion": "suanli.io/v1alpha1",
        "kind": "ComputeJob",
        "name": "train",
        "namespace": "team-a",
        "uid": "u-1",
    }


def test_a_failing_event_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def answer(_: web.Request) -> web.StreamResponse:
        return web.json_response({"kind": "Status", "message": "quota"}, status=403)

    async def scenario() -> None:
        async with FakeApiServer(answer) as server:
            hub = server.hub()
            await hub.event(REGARDING, reason="Placed", message="m", warning=True)
            await hub.close()

    run(scenario())
    assert "could not record event Placed on train" in caplog.text


def test_events_beyond_the_pending_limit_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube, "EVENTS_PENDING_MAX", 3)
    released = asyncio.Event()

    async def answer(_: web.Request) -> web.StreamResponse:
        await released.wait()
        return web.json_response({"kind": "Event"}, status=201)

    async def scenario() -> int:
        async with FakeApiServer(answer) as server:
            hub = server.hub()
            for index in range(10):
                await hub.event(REGARDING, reason=f"R{index}", message="m")
            released.set()
            await hub.close()
            return len(server.requests)

    assert run(scenario()) == 3
