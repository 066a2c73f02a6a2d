"""The gateway's own CPU per request, in process: steadier than a whole stack on a busy machine.

An end-to-end run measures the gateway's CPU per event to within about ±8 % on
the shared 2-core machine, which hides a change of a few percent. This bench
takes HTTP, NATS and the other processes out and times, in CPU seconds of this
process (``time.process_time``), the load generator's own request bodies going
through:

1. ``POST /v1/events`` of the gateway's ASGI app (the route, validation, the
   stored-form encode, the group commit, metrics) over a sink that stores
   nothing;
2. ``EventService.ingest`` alone (everything but the HTTP layer);
3. validation alone and the stored-form encode alone.

4. ``Transport.publish_events`` of a message as the group commit builds it
   (one request's stored events and its headers) to a real, fsync'd
   nats-server of its own, with one publish in flight and with
   ``publishes_in_flight_per_type`` (4) in flight: the client's CPU per
   stored ack, the nats-py share of a request (``publish_us_per_message_*``).

Each figure is the median of ``--rounds`` rounds of ``--requests`` requests, in
µs per request of ``--batch-events`` events. It says what Courier's Python and
its NATS client cost; the uvicorn share is measured by ``bench.e2e`` (issue 13).

``python -m bench.gateway_cpu``
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench._nats import bench_settings, provision
from bench._report import emit
from bench.loadgen.events import BatchFactory
from courier.examples import SCHEMAS_DIR
from courier.gateway import MemorySink, create_app
from courier.gateway.body import BodyFormat
from courier.gateway.ingest import Validator
from courier.gateway.publisher import EVENTS_HEADER, SCHEMA_VERSION_HEADER, message_id
from courier.schema import Registry, load_definitions
from courier.settings import load_settings
from courier.transport import EmbeddedNats, Transport
from courier.transport.kv import MemoryKeyValue


class _NoSink(MemorySink):
    """Stores nothing, so rounds do not grow memory."""

    async def publish(
        self, event_type: str, body: bytes, *, msg_id: str, headers: dict[str, str]
    ) -> None:
        return None


def _scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": "/v1/events",
        "raw_path": b"/v1/events",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"accept", b"*/*"),
            (b"connection", b"keep-alive"),
        ],
    }


async def _median_us(rounds: int, requests: int, one: Callable[[int], object]) -> float:
    per_request = []
    for _ in range(rounds):
        start = time.process_time()
        for i in range(requests):
            result = one(i)
            if isinstance(result, Awaitable):
                await result
        per_request.append((time.process_time() - start) / requests)
    return round(statistics.median(per_request) * 1e6, 1)


async def measure(args: argparse.Namespace) -> dict[str, object]:
    registry = Registry(MemoryKeyValue())
    await registry.apply(load_definitions(SCHEMAS_DIR))
    factory = BatchFactory(
        types=3, skew=args.skew, event_bytes=args.event_bytes, batch_events=args.batch_events
    )
    bodies = [factory.next().body for _ in range(256)]
    with tempfile.TemporaryDirectory(prefix="courier-bench-gwcpu-") as tmp:
        settings = load_settings(data_dir=Path(tmp) / "data")
        app = create_app(settings, sink=_NoSink(), registry=registry)
        async with app.router.lifespan_context(app):
            service = app.state.gateway.service
            assert service is not None

            async def post(i: int) -> None:
                body = bodies[i % len(bodies)]
                messages = iter([{"type": "http.request", "body": body, "more_body": False}])
                sent: list[dict[str, Any]] = []

                async def receive() -> dict[str, Any]:
                    return next(messages)

                async def send(message: dict[str, Any]) -> None:
                    sent.append(message)

                await app(_scope(body), receive, send)
                if sent[0]["status"] != 200:
                    raise RuntimeError(f"POST /v1/events answered {sent[0]['status']}")

            now = dt.datetime.now(dt.UTC)
            validator = Validator(service.types, settings.gateway)
            batches = [validator.decode(b, BodyFormat.JSON) for b in bodies]

            def encode(i: int) -> None:
                batch = batches[i % len(batches)]
                for name, events in batch.valid.items():
                    ids = [e.id for e in events]  # type: ignore[attr-defined]
                    service.types[name].encode_stored(events, ids, batch.sent_at, now)

            await _median_us(2, args.requests, post)  # warm up
            r, n = args.rounds, args.requests
            return {
                "post_us_per_request": await _median_us(r, n, post),
                "ingest_us_per_request": await _median_us(
                    r, n, lambda i: service.ingest(bodies[i % len(bodies)], BodyFormat.JSON, now)
                ),
                "validate_us_per_request": await _median_us(
                    r, n, lambda i: validator.decode(bodies[i % len(bodies)], BodyFormat.JSON)
                ),
                "encode_us_per_request": await _median_us(r, n, encode),
                **await measure_publishes(args, _stored_body(service, batches[0], now)),
                "batch_events": args.batch_events,
                "body_bytes_mean": round(statistics.mean(len(b) for b in bodies)),
                "requests": n,
                "rounds": r,
            }


async def measure_publish(
    url: str, event_type: str, body: bytes, rounds: int, messages: int, in_flight: int
) -> float:
    """Median µs of this process's CPU per stored ack, ``in_flight`` publishes at a time."""
    transport = await Transport.connect(url)
    sent = 0

    async def publisher(n: int) -> None:
        nonlocal sent
        for _ in range(n):
            sent += 1  # a new message id each time: every message is stored, none dropped
            await transport.publish_events(
                event_type,
                body,
                msg_id=message_id(event_type, [str(sent)]),
                headers={SCHEMA_VERSION_HEADER: "1", EVENTS_HEADER: "100"},
                timeout_secs=30,
            )

    async def one_round() -> None:
        await asyncio.gather(*(publisher(messages // in_flight) for _ in range(in_flight)))

    try:
        await one_round()  # warm up
        per_message = []
        for _ in range(rounds):
            start = time.process_time()
            await one_round()
            per_message.append((time.process_time() - start) / (messages // in_flight * in_flight))
        return round(statistics.median(per_message) * 1e6, 1)
    finally:
        await transport.close()


async def measure_publishes(args: argparse.Namespace, body: bytes) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="courier-bench-gwcpu-nats-") as tmp:
        root = Path(tmp)
        with EmbeddedNats(root / "nats", port=0) as server:
            settings = bench_settings(root, server.url)
            event_type = (await provision(settings, root, 1))[0]
            n = max(4, args.requests // 4)  # fsync'd: a few thousand a second
            return {
                f"publish_us_per_message_{k}_in_flight": await measure_publish(
                    server.url, event_type, body, args.rounds, n, k
                )
                for k in (1, settings.gateway.publishes_in_flight_per_type)
            }


def _stored_body(service: Any, batch: Any, now: dt.datetime) -> bytes:
    """The stored NDJSON of one request's events: what one message carries."""
    ((name, events),) = batch.valid.items()
    ids = [e.id for e in events]
    return bytes(service.types[name].encode_stored(events, ids, batch.sent_at, now))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.gateway_cpu", description=__doc__)
    p.add_argument("--requests", type=int, default=2000, help="requests per round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batch-events", type=int, default=100)
    p.add_argument("--event-bytes", type=int, default=360)
    p.add_argument("--skew", type=float, default=1.0, help="as bench.e2e: type weights")
    return p


def main(argv: list[str] | None = None) -> None:
    emit("gateway CPU per request, in process", asyncio.run(measure(parser().parse_args(argv))))


if __name__ == "__main__":
    main()
