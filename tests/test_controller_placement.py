"""Placement's bounded fan-out of placement writes, shared by every pass."""

from __future__ import annotations

import asyncio

import pytest

from suanli.controller.placement import bounded


def test_writes_of_several_passes_overlap_up_to_the_limit_and_never_beyond() -> None:
    in_flight = 0
    peak = 0

    async def place() -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1

    async def passes() -> None:
        slots = asyncio.Semaphore(4)
        first = [asyncio.create_task(bounded(slots, place())) for _ in range(3)]
        await asyncio.sleep(0)  # the first pass has handed its writes over and ended
        second = [asyncio.create_task(bounded(slots, place())) for _ in range(17)]
        await asyncio.gather(*first, *second)

    asyncio.run(passes())
    assert peak == 4


def test_one_failed_placement_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    done: list[int] = []

    async def place(index: int) -> None:
        await asyncio.sleep(0)
        if index == 2:
            raise RuntimeError("the hub said no")
        done.append(index)

    async def passes() -> None:
        slots = asyncio.Semaphore(2)
        await asyncio.gather(*(bounded(slots, place(index)) for index in range(5)))

    asyncio.run(passes())
    assert sorted(done) == [0, 1, 3, 4]
    assert "the hub said no" in caplog.text
