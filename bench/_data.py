"""Stored-form events and Arrow tables for the component benchmarks (writer, closer)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pyarrow as pa

from bench.loadgen.events import BatchFactory
from courier.schema import CompiledType, compile_type, load_definitions

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "courier" / "examples" / "schemas"


def compiled_example(name: str = "PlaySong", version: int = 1) -> CompiledType:
    d = next(d for d in load_definitions(EXAMPLES) if d.name == name)
    return compile_type(d.name, d.avro, version, d.settings)


def stored_bodies(
    compiled: CompiledType, messages: int, events: int = 100, event_bytes: int = 360
) -> list[tuple[bytes, list[str]]]:
    """``messages`` gateway-style message bodies (stored NDJSON) with fresh ids."""
    factory = BatchFactory(types=1, event_bytes=event_bytes, batch_events=events, seed=1)
    envelope = msgspec.defstruct("Envelope", [("events", list[compiled.event_struct])])  # type: ignore[name-defined]
    dec = msgspec.json.Decoder(envelope)
    now = dt.datetime.now(dt.UTC)
    out = []
    for _ in range(messages):
        batch = factory.next()
        evs = dec.decode(batch.body).events
        out.append((compiled.encode_stored(evs, batch.ids, None, now), batch.ids))
    return out


def arrow_rows(compiled: CompiledType, rows: int, event_bytes: int = 360) -> pa.Table:
    """A table of ``rows`` decoded events in the bucket schema (published_at = now)."""
    bodies = stored_bodies(compiled, max(1, rows // 100), 100, event_bytes)
    body = b"".join(b for b, _ in bodies)
    n = body.count(b"\n")
    now_us = int(dt.datetime.now(dt.UTC).timestamp() * 1_000_000)
    published = pa.array([now_us] * n, type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return compiled.decode_stored(body, published)
