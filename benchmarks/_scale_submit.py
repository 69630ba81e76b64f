"""Submitting the scale benchmark's objects: many POSTs from a pool of client threads.

Every phase that creates objects (ComputeJobs through the webhooks, the same with the webhooks
off, batch Jobs in the members) goes through :func:`send_all` and is rated by :func:`rate_of`,
so their creates/s compare: successful creates over the time from the first call's start to
the last successful call's return.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from suanli.members.kubeapi import describe_error, request_json


@dataclass(frozen=True)
class Sent:
    started: float  # time.monotonic()
    returned: float
    error: str | None


@dataclass(frozen=True)
class Post:
    api: Any
    path: str
    body: dict[str, Any]


def create(api: Any, path: str, body: dict[str, Any]) -> None:
    """POST, where AlreadyExists is fine (a reused federation)."""
    try:
        request_json(api, "POST", path, body=body)
    except Exception as error:
        if "409" not in describe_error(error):
            raise


def send_all(posts: Sequence[Post], rate: float, concurrency: int) -> list[Sent]:
    """POST everything from ``concurrency`` threads; at ``rate`` per second if positive
    (an open loop: request i is due at start + i/rate, however long earlier ones take).
    The results are in the order of ``posts``."""
    results: list[Sent | None] = [None] * len(posts)
    start = time.monotonic() + 0.05

    def one(index: int) -> None:
        if rate > 0:
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        post = posts[index]
        began = time.monotonic()
        error: str | None = None
        try:
            request_json(post.api, "POST", post.path, body=post.body, timeout=(5.0, 60.0))
        except Exception as failure:
            error = describe_error(failure)
        results[index] = Sent(began, time.monotonic(), error)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="submit") as pool:
        list(pool.map(one, range(len(posts))))
    return [sent for sent in results if sent is not None]


def rate_of(sent: Sequence[Sent]) -> float:
    """Successful creates per second over the creates' own time span."""
    ok = [s for s in sent if s.error is None]
    if not ok:
        return math.nan
    span = max(s.returned for s in ok) - min(s.started for s in sent)
    return len(ok) / span if span > 0 else math.nan
