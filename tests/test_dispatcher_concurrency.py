"""The dispatcher's bounded fan-out of one pass's placements."""

from __future__ import annotations

import asyncio

import pytest

from suanli.handlers.dispatcher import _run_bounded


def test_placements_overlap_up_to_the_limit_and_never_beyond() -> None:
    in_flight = 0
    peak = 0

    async def place() -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1

    asyncio.run(_run_bounded([place() for _ in range(20)], 4))
    assert peak == 4


def test_one_failed_placement_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    done: list[int] = []

    async def place(index: int) -> None:
        await asyncio.sleep(0)
        if index == 2:
            raise RuntimeError("the hub said no")
        done.append(index)

    asyncio.run(_run_bounded([place(index) for index in range(5)], 2))
    assert sorted(done) == [0, 1, 3, 4]
    assert "the hub said no" in caplog.text
