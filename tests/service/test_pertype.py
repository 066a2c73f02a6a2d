"""Stopping per-type tasks ends them even when a cancellation is lost on the way."""

from __future__ import annotations

import asyncio

from courier.transport.tasks import cancel_and_wait
from courier_testing import CancelSwallower


async def test_a_task_that_swallows_its_first_cancellation_is_cancelled_again():
    stubborn = CancelSwallower(1, sleep_secs=10)
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait([stubborn.task], every_secs=0.05), 10)
    assert stubborn.task.cancelled() and stubborn.swallowed == 1


async def test_tasks_that_ended_or_failed_are_waited_for_without_raising():
    async def fails() -> None:
        raise RuntimeError("boom")

    done = asyncio.create_task(asyncio.sleep(0))
    failed = asyncio.create_task(fails())
    await asyncio.sleep(0.01)
    await cancel_and_wait([done, failed])
    assert done.done() and isinstance(failed.exception(), RuntimeError)
