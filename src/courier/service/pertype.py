"""One long-running task per registered event type, started once its streams verify.

The writer and the auditor both consume every type's stream with their own
durable consumer. This keeps the rule they share in one place: a type's task
starts only after its live JetStream configuration matches the settings
(refusing to run on a mismatch, DESIGN §5), a task that ended is restarted on
the next refresh, and stopping cancels them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from courier.errors import ProvisioningError, TransportError
from courier.settings import Settings
from courier.transport import Transport, verify_type


class PerTypeTasks:
    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        run_type: Callable[[str], Coroutine[Any, Any, None]],
        *,
        label: str,
        log: logging.Logger,
    ) -> None:
        self._settings = settings
        self._transport = transport
        self._run_type = run_type
        self._label = label
        self._log = log
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def ensure(self, names: Iterable[str]) -> None:
        """Start the task of every type in ``names`` that has none running."""
        for name in names:
            task = self._tasks.get(name)
            if task is not None and not task.done():
                continue
            try:
                await verify_type(self._transport, self._settings, name)
            except ProvisioningError as exc:
                self._log.error("not %s %s: %s", self._label, name, exc)
                continue
            except TransportError as exc:
                self._log.warning("cannot verify %s yet (%s); retrying", name, exc)
                continue
            self._tasks[name] = asyncio.create_task(
                self._run_type(name), name=f"{self._label}-{name}"
            )

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks.values())
        self._tasks.clear()


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *, every_secs: float = 1.0) -> None:
    """Cancel ``tasks`` and return once all have ended, cancelling again while any runs.

    One cancel is not always enough on Python 3.11: ``asyncio.wait_for`` (used inside
    nats-py's fetch and request) drops a cancellation that arrives as its inner future
    completes, and a task looping ``while True`` then runs on. A stop that waited on
    one cancel hung the auditor's shutdown in a test run on a busy machine.
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
