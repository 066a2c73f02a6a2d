"""Staging objects for closer tests, written the way the writer writes them (one put),
and the close of a bucket staged so."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from courier.closer import BucketCloser, Catalog, CloseResult
from courier.model import BucketKey
from courier.schema import CompiledType, compile_type
from courier.settings import CloserSettings
from courier.storage import Layout
from courier.transport import MemoryKeyValue
from courier_testing import example_definitions


def compiled_play_song() -> CompiledType:
    d = example_definitions("PlaySong")[0]
    return compile_type(d.name, d.avro, 1, d.settings)


def stage(
    layout: Layout,
    key: BucketKey,
    ids: list[str],
    first_seq: int,
    writer: str,
    *,
    received_dc: str | None = None,
    without_received_dc: bool = False,
) -> None:
    """Stage PlaySong events ``ids`` (stream sequences from ``first_seq``) in ``key``,
    accepted by ``received_dc``; ``without_received_dc``: as a writer before that column."""
    ct = compiled_play_song()
    dec = msgspec.json.Decoder(ct.event_struct)
    events = [
        dec.decode(
            msgspec.json.encode(
                {"type": "PlaySong", "id": i, "data": {"track_id": i, "ms_played": 1}}
            )
        )
        for i in ids
    ]
    body = ct.encode_stored(events, ids, None, dt.datetime.fromtimestamp(key.start, dt.UTC))
    published = pa.array([(key.start + 1) * 1_000_000] * len(ids), pa.int64()).cast(
        pa.timestamp("us", tz="UTC")
    )
    table = ct.decode_stored(body, published, pa.array([received_dc] * len(ids), pa.string()))
    if without_received_dc:
        table = table.drop_columns(["received_dc"])
    table = table.append_column(
        "_seq", pa.array(range(first_seq, first_seq + len(ids)), pa.uint64())
    )
    table = table.append_column("_idx", pa.array([0] * len(ids), pa.uint32()))
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    skey = layout.staging_key(key, writer, first_seq, first_seq + len(ids) - 1)
    layout.store.put(skey, buf.getvalue())


async def close_staged(
    layout: Layout, key: BucketKey, watermark: float, scratch_dir: Path
) -> CloseResult:
    """Close ``key`` from what is staged, as a closer with default settings does."""
    closer = BucketCloser(
        layout,
        Catalog(MemoryKeyValue(), "closer-1", 60.0),
        CloserSettings(),
        lambda k, b: None,
        scratch_dir=scratch_dir,
    )
    result = await closer.close(key, compiled_play_song(), watermark)
    assert result is not None, f"{key.label()} did not close"
    return result
