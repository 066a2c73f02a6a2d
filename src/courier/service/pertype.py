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
from courier.transport.tasks import cancel_and_wait


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
