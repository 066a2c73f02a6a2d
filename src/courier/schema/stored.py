"""Decoding stored messages into Arrow in bulk, in C, never row by row.

The writer decodes what it fetched from a consumer; a re-close decodes what it
reads back from the stream. Both go through :func:`decode_batch`, and both
isolate a message that raises :class:`UndecodableError` by decoding one at a time.
``pyarrow.json`` decodes, or DuckDB for the writer's large batches of messages the
gateway built (:mod:`courier.schema.jsonread`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import zstandard

from courier.errors import StoredBodyError, UndecodableError
from courier.schema.codec import CompiledType
from courier.schema.jsonread import BulkJsonReader, built_by_gateway
from courier.transport import MessageLike

__all__ = [
    "EVENTS_HEADER",
    "SCHEMA_VERSION_HEADER",
    "DcOf",
    "UndecodableError",  # what decode_batch raises (declared in errors.py)
    "decode_batch",
    "message_body",
    "schema_version_of",
]

_TS = pa.timestamp("us", tz="UTC")
SCHEMA_VERSION_HEADER = "Courier-Schema-Version"
#: Names the DC that accepted a message from its headers (None: unknown), such as
#: :class:`courier.transport.sources.AcceptingDc`.
DcOf = Callable[[Mapping[str, str]], str | None]
EVENTS_HEADER = "Courier-Events"


def message_body(d: MessageLike) -> bytes:
    body = d.data
    if d.headers.get("Content-Encoding") == "zstd":
        body = zstandard.ZstdDecompressor().decompress(body)
    if body and not body.endswith(b"\n"):
        body += b"\n"
    return body


def schema_version_of(d: MessageLike) -> int:
    try:
        return int(d.headers.get(SCHEMA_VERSION_HEADER, "0"))
    except ValueError:
        return 0


def _lines(body: bytes) -> int:
    """Newlines in ``body``: numpy compares ~3x faster than ``bytes.count`` (0.057 vs
    0.164 µs per 360-byte line, 0.11 core-s per million rows of the writer)."""
    return int(np.count_nonzero(np.frombuffer(body, dtype=np.uint8) == 10))


def decode_batch(
    compiled: CompiledType,
    deliveries: Sequence[MessageLike],
    dc_of: DcOf,
    bulk: BulkJsonReader | None = None,
) -> pa.Table:
    """Decode the bodies of ``deliveries`` (same type) in one call.

    ``bulk`` reads them when they are many and all built by the gateway
    (:mod:`courier.schema.jsonread`), ``pyarrow.json`` otherwise.

    ``published_at`` comes from the transport's timestamp of each message and
    ``received_dc`` from ``dc_of`` of its headers (once per message, not per row);
    ``_seq`` is the stream sequence and ``_idx`` the line within the message,
    which together give every row a stable, total order for the closer.
    """
    try:
        bodies = [message_body(d) for d in deliveries]
    except zstandard.ZstdError as exc:
        raise UndecodableError(f"body is not valid zstd: {exc}") from exc
    counts = np.fromiter(map(_lines, bodies), dtype=np.int64, count=len(bodies))
    total = int(counts.sum())
    ts_us = np.fromiter(
        (round(d.published_at * 1_000_000) for d in deliveries), dtype=np.int64, count=len(bodies)
    )
    seqs = np.fromiter((d.seq for d in deliveries), dtype=np.uint64, count=len(bodies))
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    idx = (np.arange(total, dtype=np.int64) - starts).astype(np.uint32)
    published = pa.array(np.repeat(ts_us, counts), type=pa.int64()).cast(_TS)
    dcs = pa.array([dc_of(d.headers) for d in deliveries], type=pa.string())
    received_dc = dcs.take(pa.array(np.repeat(np.arange(len(bodies)), counts)))
    try:
        if bulk is not None and not all(
            built_by_gateway(compiled.name, d.headers) for d in deliveries
        ):
            bulk = None
        table = compiled.decode_stored(bodies, published, received_dc, bulk=bulk)
    except (StoredBodyError, pa.ArrowInvalid, pa.ArrowTypeError, ValueError, KeyError) as exc:
        raise UndecodableError(str(exc)) from exc
    if table.num_rows != total:
        raise UndecodableError(f"decoded {table.num_rows} rows from {total} lines")
    table = table.append_column("_seq", pa.array(np.repeat(seqs, counts), type=pa.uint64()))
    return table.append_column("_idx", pa.array(idx, type=pa.uint32()))
