"""A bare embedded NATS with Courier's resources provisioned (for component benchmarks)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from bench._stack import schema_dir
from courier.model import INVALID_TYPE
from courier.schema import Registry, load_definitions
from courier.settings import Settings, load_settings
from courier.transport import (
    SCHEMAS_KV,
    ConsumerProgress,
    Transport,
    provision_base,
    provision_type,
)


def bench_settings(root: Path, nats_url: str, **overrides: object) -> Settings:
    return load_settings(data_dir=root / "data", nats_url=nats_url, **overrides)


async def provision(settings: Settings, root: Path, types: int) -> list[str]:
    """Register the load generator's types and create their streams and consumers."""
    transport = await Transport.connect(settings.resolved_nats_url)
    try:
        await provision_base(transport, settings)
        defs = load_definitions(schema_dir(root, types, 10))
        await Registry(await transport.key_value(SCHEMAS_KV)).apply(defs)
        for name in [INVALID_TYPE, *(d.name for d in defs)]:
            await provision_type(transport, settings, name)
        return [d.name for d in defs]
    finally:
        await transport.close()


async def watch_consumer(
    transport: Transport,
    event_type: str,
    durable: str,
    last_seq: int,
    timeout_secs: float,
    proc: subprocess.Popen[bytes],
) -> AsyncIterator[tuple[Literal["started", "drained"], ConsumerProgress, float]]:
    """Poll ``durable`` while ``proc`` (a ``courier`` component) consumes the stream.

    Yields ``("started", progress, secs)`` once its first fetch arrived (start-up is
    over: the moment to start counting its CPU), then ``("drained", progress, secs)``
    when the ack floor reaches ``last_seq``; ``secs`` since the watch began. Raises
    RuntimeError when the process exits or ``timeout_secs`` pass first."""
    started = time.monotonic()
    consuming = False
    while time.monotonic() - started < timeout_secs:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with code {proc.returncode}")
        progress = await transport.progress(event_type, durable)
        if not consuming and (progress.num_ack_pending or progress.ack_floor_seq):
            consuming = True
            yield "started", progress, time.monotonic() - started
        if progress.ack_floor_seq >= last_seq:
            yield "drained", progress, time.monotonic() - started
            return
        await asyncio.sleep(0.1 if consuming else 0.01)
    raise RuntimeError(f"{durable} did not reach seq {last_seq} in {timeout_secs}s")
