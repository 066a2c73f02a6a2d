"""The raw JetStream ceiling: pre-built messages published straight to a stream.

The reference the end-to-end figure is compared with (DESIGN §5, §11): the same
server (``sync_interval: always``), messages of ``events * event_bytes`` bytes
with a ``Nats-Msg-Id`` each, as the gateway sends them, and enough publishes in
flight to let the server group its fsyncs. This module talks to nats-py
directly on purpose: it measures the transport without Courier.

Run alone: ``python -m bench.jetstream --duration 10`` (starts its own server).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import StorageType, StreamConfig

from bench._report import emit, percentile
from courier.transport import EmbeddedNats

STREAM = "BENCH_RAW"
SUBJECT = "bench.raw"


def message_body(events: int, event_bytes: int) -> bytes:
    line = b'{"id":"0193a7c2-0000-7000-8000-000000000000","data":"' + b"x" * max(
        0, event_bytes - 60
    )
    return b"".join(line + b'%05d"}\n' % i for i in range(events))


async def raw_ceiling(
    nats_url: str,
    *,
    duration_secs: float,
    events_per_message: int = 100,
    event_bytes: int = 360,
    in_flight: int = 64,
) -> dict[str, float]:
    """Publish for ``duration_secs``; returns messages/s, events/s, MB/s and latency."""
    nc = await nats.connect(nats_url, name="bench-raw")
    js = nc.jetstream(timeout=30)
    try:
        await js.add_stream(
            StreamConfig(
                name=STREAM,
                subjects=[SUBJECT],
                storage=StorageType.FILE,
                duplicate_window=120,
            )
        )
        body = message_body(events_per_message, event_bytes)
        latencies: list[float] = []
        count = 0
        end = time.monotonic() + duration_secs
        run = time.time_ns()

        async def worker(w: int) -> None:
            nonlocal count
            i = 0
            while time.monotonic() < end:
                t0 = time.perf_counter()
                await js.publish(SUBJECT, body, headers={"Nats-Msg-Id": f"{run}-{w}-{i}"})
                latencies.append((time.perf_counter() - t0) * 1000)
                count += 1
                i += 1

        started = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(in_flight)))
        elapsed = time.monotonic() - started
        await js.delete_stream(STREAM)
    finally:
        await nc.close()
    msgs = count / elapsed
    return {
        "raw_messages_per_s": round(msgs, 1),
        "raw_jetstream_events_per_s": round(msgs * events_per_message, 1),
        "raw_mb_per_s": round(msgs * len(body) / 1e6, 2),
        "raw_message_bytes": len(body),
        "raw_publish_p50_ms": round(percentile(latencies, 50), 3),
        "raw_publish_p99_ms": round(percentile(latencies, 99), 3),
        "raw_in_flight": in_flight,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.jetstream", description=__doc__)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--events-per-message", type=int, default=100)
    p.add_argument("--event-bytes", type=int, default=360)
    p.add_argument("--in-flight", type=int, default=64)
    args = p.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="courier-bench-raw-") as tmp,
        EmbeddedNats(Path(tmp) / "nats", port=0) as server,
    ):
        if True:
            summary = asyncio.run(
                raw_ceiling(
                    server.url,
                    duration_secs=args.duration,
                    events_per_message=args.events_per_message,
                    event_bytes=args.event_bytes,
                    in_flight=args.in_flight,
                )
            )
    emit("raw JetStream ceiling", summary)


if __name__ == "__main__":
    main()
