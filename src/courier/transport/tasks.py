"""Stopping asyncio tasks that may lose a cancellation (Python 3.11 with nats-py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *, every_secs: float = 1.0) -> None:
    """Cancel ``tasks`` and return once all have ended, cancelling again while any runs.

    One cancel is not always enough on Python 3.11: ``asyncio.wait_for`` (used inside
    nats-py's fetch, request and reconnect) drops a cancellation that arrives as its
    inner future completes (cpython gh-86296), and a task looping ``while True`` then
    runs on. A stop that waited on one cancel hung the auditor's shutdown in a test run
    on a busy machine, and a closed connection's reconnect loop a CI run's teardown.
    """
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=every_secs)
    for t in tasks:  # mark what they raised as seen: a stop does not re-raise it
        if not t.cancelled():
            t.exception()
