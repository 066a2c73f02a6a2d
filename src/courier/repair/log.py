"""The audit log of repairs (DESIGN §10: repairs are admin-only, audited and explicit).

Every repair call that passed authentication, done or refused, is one JSON
record in the ``courier_repairs`` KV bucket, keyed by its id (a UUIDv7, so
keys sort by start time): the operation, its arguments, the *name* of the
principal (never a key), start and finish times, the outcome (``started``,
``done``, ``refused``, ``failed``), the error, counts and the operation's
result. Each finished repair also logs one INFO line on ``courier.repair``.

The protocol of :meth:`RepairLog.recording`:

1. write the record (outcome ``started``) before anything changes; a repair
   whose record cannot be written is not done (the gateway answers 503);
2. run the repair (the caller fills ``counts`` and ``result``);
3. write the outcome, the finish time and the counts, and log the line.

A crash between 1 and 3 leaves a ``started`` record without ``finished_at``:
the repair may have happened in part. Every repair is safe to run again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import msgspec

from courier.errors import (
    CourierError,
    ProvisioningError,
    RepairRefusedError,
    RequestError,
    UnknownEventTypeError,
)
from courier.model import iso_utc, uuid7
from courier.transport.kv import KeyValue

log = logging.getLogger("courier.repair")

FORMAT_VERSION = 1
Outcome = Literal["started", "done", "refused", "failed"]
#: Errors that mean "not done, nothing changed, because of the request or the state".
REFUSALS: tuple[type[Exception], ...] = (
    RequestError,
    RepairRefusedError,
    UnknownEventTypeError,
    ProvisioningError,
)


class RepairRecord(msgspec.Struct, kw_only=True):
    """One repair call, as stored in the ``courier_repairs`` KV bucket."""

    format_version: int = FORMAT_VERSION
    id: str
    operation: str
    event_type: str
    arguments: dict[str, Any]
    #: The API key's name (``admin``; ``anonymous`` with auth off). Never the key.
    principal: str
    started_at: str
    finished_at: str | None = None
    outcome: Outcome = "started"
    error: str | None = None
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    result: dict[str, Any] = msgspec.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = msgspec.to_builtins(self)
        return doc


_decode = msgspec.json.Decoder(RepairRecord).decode


class RepairLog:
    """Records repairs in a :class:`~courier.transport.kv.KeyValue` (``courier_repairs``)."""

    def __init__(self, kv: KeyValue, *, clock: Callable[[], float] = time.time) -> None:
        self._kv = kv
        self._clock = clock
        self._last_id = ""

    def _new_id(self) -> str:
        """A UUIDv7 above the last one made here: two repairs in one millisecond still
        list in the order they started (UUIDv7's random bits alone would not)."""
        new = uuid7()
        while new <= self._last_id:
            new = uuid7()
        self._last_id = new
        return new

    @contextlib.asynccontextmanager
    async def recording(
        self, operation: str, event_type: str, principal: str, arguments: dict[str, Any]
    ) -> AsyncIterator[RepairRecord]:
        """Record one repair around the ``async with`` body (the protocol above).

        An exception from the body is recorded (``refused`` for :data:`REFUSALS`,
        else ``failed``) and re-raised. Step 1 failing raises TransportError and
        the body never runs.
        """
        record = RepairRecord(
            id=self._new_id(),
            operation=operation,
            event_type=event_type,
            arguments=arguments,
            principal=principal,
            started_at=iso_utc(self._clock()),
        )
        await self._kv.create(record.id, msgspec.json.encode(record))  # step 1
        try:
            yield record  # step 2
        except REFUSALS as exc:
            await self._finish(record, "refused", str(exc))
            raise
        except Exception as exc:
            await self._finish(record, "failed", str(exc) or type(exc).__name__)
            raise
        await self._finish(record, "done", None)

    async def _finish(self, record: RepairRecord, outcome: Outcome, error: str | None) -> None:
        # Step 3.
        record.outcome = outcome
        record.error = error
        record.finished_at = iso_utc(self._clock())
        try:
            await self._kv.put(record.id, msgspec.json.encode(record))
        except CourierError as exc:
            log.error(
                "repair %s (%s %s) finished %s but its record could not be updated (%s); "
                "it stays 'started' in the repair log",
                record.id,
                record.operation,
                record.event_type,
                outcome,
                exc,
            )
        counts = " ".join(f"{k}={v}" for k, v in sorted(record.counts.items()))
        log.info(
            "repair %s: %s %s %s by %s: %s%s",
            record.id,
            record.operation,
            record.event_type,
            _args_text(record.arguments),
            record.principal,
            outcome,
            f" ({error})" if error else (f" [{counts}]" if counts else ""),
        )

    async def list(self, limit: int = 100) -> list[RepairRecord]:
        """The latest ``limit`` records, newest first."""
        records = []
        for key in sorted(await self._kv.keys(), reverse=True)[: max(0, limit)]:
            entry = await self._kv.get(key)
            if entry is None:
                continue
            try:
                records.append(_decode(entry.value))
            except msgspec.DecodeError:
                log.warning("repair log entry %s is not a repair record; skipped", key)
        return records


def _args_text(arguments: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in arguments.items()) or "-"
