"""Background loops outlive their errors: counted, logged once per cause, and they go on."""

from __future__ import annotations

import asyncio
import logging

import pytest

from suanli import metrics
from suanli.kits.loops import run_forever


def test_a_loop_counts_its_failures_logs_each_cause_once_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes: list[Exception | None] = [
        ConnectionError("member a does not answer"),
        ConnectionError("member a does not answer"),
        ConnectionError("member a does not answer"),
        None,
        ValueError("something else"),
        None,
    ]
    caplog.set_level(logging.INFO, logger="suanli.kits.loops")
    steps = 0
    errors = metrics.BACKGROUND_TASK_ERRORS.labels("test-loop")

    async def main() -> None:
        nonlocal steps
        turns: asyncio.Queue[None] = asyncio.Queue()
        done = asyncio.Event()

        async def step() -> None:
            nonlocal steps
            outcome = outcomes[steps]
            steps += 1
            if steps == len(outcomes):
                done.set()
            if outcome is not None:
                raise outcome

        before = errors._value.get()
        task = asyncio.get_running_loop().create_task(run_forever("test-loop", turns.get, step))
        for _ in outcomes:
            turns.put_nowait(None)
        await done.wait()
        await asyncio.sleep(0)
        assert not task.done()  # still waiting for its next turn
        assert errors._value.get() == before + 4
        task.cancel()

    asyncio.run(main())
    assert steps == len(outcomes)
    assert caplog.text.count("test-loop failed") == 2  # the first cause once, the second once
    assert caplog.text.count("test-loop works again") == 2
