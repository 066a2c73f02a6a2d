"""Helpers of the SDK and tailer tests: a real gateway served over HTTP, and bucket checks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from courier.errors import TransportUnavailableError
from courier.gateway import NatsSink, create_app
from courier.model import bucket_start
from courier.transport import free_port
from courier_testing import Pipeline, eventually


class SwitchableSink(NatsSink):
    """The real NATS sink, with a switch that makes the gateway answer 503 (transport down)."""

    down = False

    async def publish(self, event_type: str, body: bytes, *, msg_id: str, headers: Any) -> None:
        if self.down:
            raise TransportUnavailableError("injected: transport down")
        await super().publish(event_type, body, msg_id=msg_id, headers=headers)


@contextlib.asynccontextmanager
async def http_gateway(
    pipeline: Pipeline, *, port: int | None = None, sink: NatsSink | None = None
) -> AsyncIterator[str]:
    """Serve the real gateway app with uvicorn on 127.0.0.1; yields its base URL."""
    port = port or free_port()
    app = create_app(
        pipeline.settings,
        sink=sink or NatsSink(pipeline.transport, 5.0),
        registry=pipeline.registry,
    )
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def closed_ids(pipeline: Pipeline, event_type: str, column: str = "id") -> Counter[Any]:
    """Run writer and closer until the bucket of "now" closes; count ``column`` in closed buckets."""
    width = pipeline.settings.bucket_width_secs
    last = bucket_start(time.time(), width)
    if not pipeline.tasks:
        pipeline.start_writer()
        await pipeline.start_closer()
    await pipeline.wait_until(
        lambda: pipeline.reader.manifest(event_type, last) is not None, timeout_secs=60
    )
    table = pipeline.reader.read(event_type, 0, time.time() + 10)
    return Counter(table.column(column).to_pylist())


async def wait_for(predicate: Any, timeout_secs: float = 60.0, what: str = "condition") -> None:
    await eventually(predicate, what=what, timeout_secs=timeout_secs)
