"""Helpers shared by the integration tests (importable thanks to pytest's pythonpath)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec

from courier.closer import Catalog, Closer
from courier.model import bucket_start
from courier.schema import CompiledType, Registry, TypeDefinition, load_definitions
from courier.settings import Settings, load_settings, settings_env
from courier.storage import BucketReader
from courier.transport import (
    CATALOG_KV,
    SCHEMAS_KV,
    Transport,
    provision_base,
    provision_type,
    stream_name,
)
from courier.writer import Writer

T = TypeVar("T")


async def provisioned_transport(settings: Settings, event_type: str = "PlaySong") -> Transport:
    """A connection to the settings' NATS with the base resources and ``event_type``'s
    stream and consumers provisioned (close it when done)."""
    t = await Transport.connect(settings.resolved_nats_url)
    await provision_base(t, settings)
    await provision_type(t, settings, event_type)
    return t


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    *,
    what: str,
    timeout_secs: float = 30.0,
    interval_secs: float = 0.1,
) -> T:
    """Poll ``check`` (plain or async) until it returns a truthy value, and return that value.

    Tests wait for the condition they mean, never for a fixed time. When the
    time is up this fails naming ``what`` was awaited and the last value seen.
    """
    deadline = time.monotonic() + timeout_secs
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout_secs:g}s (last: {value!r})")
        await asyncio.sleep(interval_secs)


class CancelSwallower:
    """A task looping ``while True`` that swallows its first ``times`` cancellations, as
    a loop around Python 3.11's ``asyncio.wait_for`` can (cpython gh-86296); the next
    one ends it. ``swallowed`` counts those it swallowed."""

    def __init__(self, times: int, *, sleep_secs: float) -> None:
        self.swallowed = 0
        self._times = times
        self.task = asyncio.create_task(self._run(sleep_secs))

    async def _run(self, sleep_secs: float) -> None:
        while True:
            try:
                await asyncio.sleep(sleep_secs)
            except asyncio.CancelledError:
                if self.swallowed == self._times:
                    raise
                self.swallowed += 1


def metric_value(registry: Any, name: str, **labels: str) -> float:
    """One sample of a Prometheus registry (0 when it was never set): the public way to read it."""
    return float(registry.get_sample_value(name, labels or None) or 0.0)


EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "courier" / "examples" / "schemas"


def example_definitions(*names: str) -> list[TypeDefinition]:
    defs = load_definitions(EXAMPLES)
    return [d for d in defs if not names or d.name in names]


@dataclass
class Pipeline:
    """A provisioned Courier on a real nats-server, with in-process writer/closer on demand."""

    settings: Settings
    transport: Transport
    registry: Registry
    compiled: dict[str, CompiledType]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    _msg: int = 0

    @property
    def reader(self) -> BucketReader:
        return BucketReader(self.settings.data_dir, self.settings.bucket_width_secs)

    async def publish(self, event_type: str, payloads: list[dict[str, Any]], ids: list[str]) -> int:
        """Publish one message holding these events, as the gateway would; returns its seq."""
        ct = self.compiled[event_type]
        dec = msgspec.json.Decoder(ct.event_struct)
        events = [
            dec.decode(msgspec.json.encode({"type": event_type, "id": i, "data": p}))
            for i, p in zip(ids, payloads, strict=True)
        ]
        body = ct.encode_stored(events, ids, None, dt.datetime.now(dt.UTC))
        self._msg += 1
        res = await self.transport.publish_events(
            event_type,
            body,
            msg_id=f"test-{self._msg}-{time.time_ns()}",
            headers={"Courier-Schema-Version": str(ct.version)},
            timeout_secs=5,
        )
        return res.seq

    async def bucket_of(self, event_type: str, seq: int) -> int:
        """The bucket a stored message belongs to: its store time picks it (DESIGN §3).

        A clock read after the publish can be one bucket later on a busy machine."""
        raw = await self.transport.js.get_msg(stream_name(event_type), seq=seq)
        assert raw.time is not None
        return bucket_start(raw.time.timestamp(), self.settings.bucket_width_secs)

    def start_writer(self) -> Writer:
        w = Writer(self.settings, self.transport, self.registry)
        self.tasks.append(asyncio.create_task(w.run(self.stop_event)))
        return w

    async def start_closer(self, closer_id: str = "test-closer") -> Closer:
        catalog = Catalog(await self.transport.key_value(CATALOG_KV), closer_id, 30.0)
        c = Closer(self.settings, self.transport, self.registry, catalog)
        self.tasks.append(asyncio.create_task(c.run(self.stop_event)))
        return c

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        self.stop_event = asyncio.Event()

    async def wait_until(
        self, predicate: Callable[[], bool], timeout_secs: float = 30.0, what: str = "condition"
    ) -> None:
        await eventually(predicate, what=what, timeout_secs=timeout_secs)


async def open_pipeline(settings: Settings, definitions: list[TypeDefinition]) -> Pipeline:
    transport = await Transport.connect(settings.resolved_nats_url)
    await provision_base(transport, settings)
    registry = Registry(await transport.key_value(SCHEMAS_KV))
    await registry.apply(definitions)
    compiled = await registry.compiled()
    for name in compiled:
        await provision_type(transport, settings, name)
    return Pipeline(settings, transport, registry, compiled)


def settings_for(data_dir: Path, nats_url: str, **overrides: Any) -> Settings:
    """A test's settings: its data dir and nats-server, two-second buckets; overrides as
    in ``load_settings``."""
    base: dict[str, Any] = {
        "data_dir": data_dir,
        "nats_url": nats_url,
        "bucket_width_secs": 2,
        "max_clock_skew_secs": 0.5,
        # Table commits are tested in tests/tables (which turn them on); elsewhere they
        # would only add pyiceberg's start-up and a commit per 2-second bucket.
        "tables": {"enabled": False},
    }
    return load_settings(**{**base, **overrides})


FAST = {
    "writer": {"flush_interval_secs": 0.3, "fetch_wait_secs": 0.2, "ack_wait_secs": 3.0},
    "closer": {"default_grace_secs": 1, "poll_interval_secs": 0.2},
}


def courier_process(
    settings: Settings, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Run ``courier ARGS`` as a child process against the test's NATS and data dir."""
    full_env = dict(os.environ)
    full_env.update(settings_env(settings))
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "courier.cli.main", *args], env=full_env, stdin=subprocess.DEVNULL
    )


async def wait_answering(
    url: str, proc: subprocess.Popen[bytes], timeout_secs: float = 30.0
) -> None:
    """Wait until ``url`` answers 200; fail at once if ``proc`` (the server) exits."""
    deadline = time.monotonic() + timeout_secs
    async with httpx.AsyncClient() as client:
        while True:
            assert proc.poll() is None, f"{proc.args!r} exited with {proc.returncode}"
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer 200 within {timeout_secs:g}s")
            await asyncio.sleep(0.1)


def stop_process(proc: subprocess.Popen[bytes], timeout_secs: float = 15.0) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_secs)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)
