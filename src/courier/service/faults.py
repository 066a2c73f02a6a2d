"""Fault injection: the one place production code reads the fault suite's hooks.

The crash tests and ``bench/faults`` make a service process misbehave on
purpose (kill itself at a chosen point, run with a skewed clock) by setting an
environment variable when they start it. Every such variable is declared here,
read once when a service starts (:meth:`FaultHooks.from_env`), and announced
with a warning, so a process running with a hook says so in its first log
lines. None is ever set in production; with none set, every hook is a no-op.

The services take a :class:`FaultHooks` and call its methods at their fault
points; nothing else in ``src/`` reads a ``COURIER_FAULT_*`` variable.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger("courier.service.faults")

#: The closer SIGKILLs itself right after the given step (1-7) of the close protocol.
CLOSER_CRASH_AFTER_STEP_ENV = "COURIER_FAULT_CLOSER_CRASH_AFTER_STEP"
#: The writer SIGKILLs itself after a staging file is durable and before it acks.
WRITER_CRASH_AFTER_STAGING_ENV = "COURIER_FAULT_WRITER_CRASH_AFTER_STAGING"
#: The closer's wall clock is off by this many seconds (positive = ahead).
CLOCK_OFFSET_ENV = "COURIER_FAULT_CLOCK_OFFSET_SECS"


@dataclass(frozen=True)
class FaultHooks:
    """The hooks a service process runs with; the default has none."""

    closer_crash_after_step: int | None = None
    writer_crash_after_staging: bool = False
    clock_offset_secs: float = 0.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> FaultHooks:
        step = environ.get(CLOSER_CRASH_AFTER_STEP_ENV)
        hooks = cls(
            closer_crash_after_step=int(step) if step else None,
            writer_crash_after_staging=bool(environ.get(WRITER_CRASH_AFTER_STAGING_ENV)),
            clock_offset_secs=float(environ.get(CLOCK_OFFSET_ENV) or 0.0),
        )
        if hooks != cls():
            log.warning("fault injection is on in this process: %s", hooks)
        return hooks

    def closer_after_step(self, step: int) -> None:
        """Called by the closer after each step of the close protocol."""
        if self.closer_crash_after_step == step:
            _kill_self(f"the closer after step {step}")

    def writer_staged(self, path: str) -> None:
        """Called by the writer once a staging file is durable, before its ack."""
        if self.writer_crash_after_staging:
            _kill_self(f"the writer before acking {path}")


def _kill_self(what: str) -> None:
    log.warning("fault injection: killing %s", what)
    os.kill(os.getpid(), signal.SIGKILL)
