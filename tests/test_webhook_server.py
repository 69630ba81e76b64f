"""The webhook server reads admission reviews larger than aiohttp's 1 MiB default."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from typing import Any

import kopf
import pytest

from suanli.handlers.webhook_server import MAX_REVIEW_BYTES, WebhookServer

# An UPDATE review of a ComputeJob near etcd's 1.5 MiB object limit: two copies of it.
LARGE = 3 * 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(port: int, size: int) -> int:
    review = {"request": {"uid": "1", "object": {"padding": "x" * size}}}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/computejob-immutable",
        data=json.dumps(review).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


async def _status_of_post(server: kopf.WebhookServer, size: int) -> tuple[int, int]:
    """(HTTP status of posting a review of ``size`` bytes, bytes the handler saw)."""
    seen: list[int] = []

    async def handler(data: Any, **_: Any) -> dict[str, Any]:
        seen.append(len(data["request"]["object"]["padding"]))
        return {"response": {"allowed": True}}

    serving = server(handler)
    await anext(serving)
    try:
        status = await asyncio.to_thread(_post, server.port or 0, size)
    finally:
        await serving.aclose()
    return status, seen[0] if seen else 0


@pytest.mark.parametrize("size", [1024, LARGE])
def test_reviews_up_to_the_limit_reach_the_handler(size: int) -> None:
    server = WebhookServer(addr="127.0.0.1", port=_free_port(), insecure=True)
    assert asyncio.run(_status_of_post(server, size)) == (200, size)


def test_kopfs_own_server_would_refuse_the_large_review() -> None:
    # What the subclass is for: without it the same review is refused as too large.
    server = kopf.WebhookServer(addr="127.0.0.1", port=_free_port(), insecure=True)
    assert asyncio.run(_status_of_post(server, LARGE)) == (413, 0)


def test_the_limit_is_still_a_limit() -> None:
    server = WebhookServer(addr="127.0.0.1", port=_free_port(), insecure=True)
    assert asyncio.run(_status_of_post(server, MAX_REVIEW_BYTES + 1))[0] == 413
