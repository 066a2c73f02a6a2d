"""The writer decodes many messages per pyarrow call (CPU per row, issue 13) and
still stages every row of every message it acks exactly once."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from functools import partial

import pyarrow.parquet as pq

import courier.writer.service as service
from courier.gateway.publisher import message_id
from courier.model import BucketKey
from courier.schema.jsonread import BulkJsonReader
from courier.storage.layout import open_layout
from courier.writer import Writer
from courier_testing import metric_value
from staging_testing import close_staged, stage


async def test_a_buffer_decodes_its_messages_in_one_call_and_stages_every_row_once(
    pipeline, monkeypatch
):
    calls: list[int] = []
    real = service.decode_batch

    def counting(compiled, deliveries, dc_of, bulk=None):  # type: ignore[no-untyped-def]
        calls.append(len(deliveries))
        return real(compiled, deliveries, dc_of, bulk)

    monkeypatch.setattr(service, "decode_batch", counting)
    ids = [[f"m{m}-{i}" for i in range(50)] for m in range(20)]
    for batch in ids:
        await pipeline.publish("PlaySong", [{"track_id": i, "ms_played": 1} for i in batch], batch)
    pipeline.start_writer()
    await pipeline.wait_until(
        lambda: (
            sum(
                pq.read_metadata(f).num_rows
                for f in (pipeline.settings.data_dir / "_staging").rglob("*.parquet")
            )
            >= 1000
        ),
        30,
    )
    staged = [
        i
        for f in (pipeline.settings.data_dir / "_staging").rglob("*.parquet")
        for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()
    ]
    assert sorted(staged) == sorted(i for batch in ids for i in batch)
    assert sum(calls) == 20 and max(calls) > 1, calls


async def test_gateway_built_messages_are_read_by_duckdb_and_others_by_pyarrow(
    pipeline, monkeypatch
):
    """Against a real server: the writer's bulk reader reads the batches whose every
    message the gateway's group commit built (``message_id``), pyarrow.json the rest,
    and every row of both is staged once."""
    monkeypatch.setattr(service, "BulkJsonReader", partial(BulkJsonReader, min_lines=1))
    ct = pipeline.compiled["PlaySong"]
    gateway_ids = [[f"g{m}-{i}" for i in range(50)] for m in range(10)]
    for batch in gateway_ids:
        events = [
            ct.event_struct(id=i, data=ct.payload_struct(track_id=i, ms_played=1))  # type: ignore[call-arg]
            for i in batch
        ]
        await pipeline.transport.publish_events(
            "PlaySong",
            ct.encode_stored(events, batch, None, dt.datetime.now(dt.UTC)),
            msg_id=message_id("PlaySong", batch),
            headers={"Courier-Schema-Version": str(ct.version)},
            timeout_secs=5,
        )
    writer = pipeline.start_writer()
    await pipeline.wait_until(lambda: _staged_rows(pipeline) >= 500, 30)
    assert metric_value(writer.metrics.registry, "courier_writer_rows_bulk_decoded_total") == 500
    other = [f"o{i}" for i in range(50)]  # published as a test (or a republish) would
    await pipeline.publish("PlaySong", [{"track_id": i, "ms_played": 1} for i in other], other)
    await pipeline.wait_until(lambda: _staged_rows(pipeline) >= 550, 30)
    assert metric_value(writer.metrics.registry, "courier_writer_rows_bulk_decoded_total") == 500
    staged = [
        i
        for f in (pipeline.settings.data_dir / "_staging").rglob("*.parquet")
        for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()
    ]
    assert sorted(staged) == sorted([i for batch in gateway_ids for i in batch] + other)


def _staged_rows(pipeline) -> int:  # type: ignore[no-untyped-def]
    return sum(
        pq.read_metadata(f).num_rows
        for f in (pipeline.settings.data_dir / "_staging").rglob("*.parquet")
    )


async def test_a_flush_waits_for_a_decode_in_flight_and_never_acks_rows_it_lacks(
    pipeline, monkeypatch
):
    release = threading.Event()
    started = threading.Event()
    real = service.decode_batch

    def slow(compiled, deliveries, dc_of, bulk=None):  # type: ignore[no-untyped-def]
        started.set()
        release.wait(10)
        return real(compiled, deliveries, dc_of, bulk)

    monkeypatch.setattr(service, "decode_batch", slow)
    monkeypatch.setattr(service, "_DECODE_BATCH_BYTES", 1)  # decode on arrival
    ids = [f"r{i}" for i in range(30)]
    await pipeline.publish("PlaySong", [{"track_id": i, "ms_played": 1} for i in ids], ids)
    writer = Writer(pipeline.settings, pipeline.transport, pipeline.registry)
    writer._compiled = await pipeline.registry.compiled()
    consumer = await pipeline.transport.pull_consumer("PlaySong")
    got = await consumer.fetch(10, 5.0)
    assert len(got) == 1
    accepting = asyncio.create_task(writer._accept("PlaySong", got))
    await asyncio.to_thread(started.wait, 10)  # the message is out of pending, being decoded
    (buf,) = writer._buffers.values()
    flushing = asyncio.create_task(writer._flush(buf))
    await asyncio.sleep(0.5)
    assert not flushing.done()
    assert (await pipeline.transport.progress("PlaySong")).ack_floor_seq == 0
    release.set()
    await accepting
    assert await flushing
    assert (await pipeline.transport.progress("PlaySong")).ack_floor_seq == 1  # applied
    staged = [
        i
        for f in (pipeline.settings.data_dir / "_staging").rglob("*.parquet")
        for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()
    ]
    assert sorted(staged) == sorted(ids)


async def test_a_decoded_message_keeps_no_body_while_it_waits_for_its_flush(pipeline):
    # Issue 13: the bodies of decoded messages stayed in memory beside their rows until
    # the flush, outside writer.max_buffer_bytes (the writer peaked at 1,041 MiB).
    ids = [[f"b{m}-{i}" for i in range(20)] for m in range(3)]
    for batch in ids:
        await pipeline.publish("PlaySong", [{"track_id": i, "ms_played": 1} for i in batch], batch)
    writer = Writer(pipeline.settings, pipeline.transport, pipeline.registry)
    writer._compiled = await pipeline.registry.compiled()
    consumer = await pipeline.transport.pull_consumer("PlaySong")
    got = await consumer.fetch(10, 5.0)
    assert len(got) == 3 and all(d.data for d in got)
    await writer._accept("PlaySong", got)
    (buf,) = writer._buffers.values()
    await writer._decode_pending(buf)
    assert buf.rows == 60 and not buf.pending
    assert [d.data for d in buf.deliveries] == [b"", b"", b""]
    assert buf.nbytes == sum(t.nbytes for t in buf.tables)
    assert await writer._flush(buf)
    assert (await pipeline.transport.progress("PlaySong")).ack_floor_seq == 3  # acked, applied
    staged = [
        i
        for f in (pipeline.settings.data_dir / "_staging").rglob("*.parquet")
        for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()
    ]
    assert sorted(staged) == sorted(i for batch in ids for i in batch)


async def test_staging_files_carry_no_column_statistics_but_every_row(pipeline):
    ids = [f"s{i}" for i in range(40)]
    await pipeline.publish("PlaySong", [{"track_id": i, "ms_played": 1} for i in ids], ids)
    pipeline.start_writer()
    staging = pipeline.settings.data_dir / "_staging"
    await pipeline.wait_until(lambda: any(staging.rglob("*.parquet")), 30)
    for f in staging.rglob("*.parquet"):
        meta = pq.read_metadata(f)
        assert meta.num_rows
        for rg in range(meta.num_row_groups):
            for col in range(meta.num_columns):
                assert not meta.row_group(rg).column(col).is_stats_set, (f, col)
    staged = [
        i for f in staging.rglob("*.parquet") for i in pq.read_table(f).column("id").to_pylist()
    ]
    assert sorted(staged) == sorted(ids)


async def test_a_bucket_closes_from_old_staging_files_with_statistics_and_new_ones_without(
    pipeline, tmp_path
):
    ids = [f"n{i}" for i in range(30)]
    seq = await pipeline.publish("PlaySong", [{"track_id": i, "ms_played": 1} for i in ids], ids)
    pipeline.start_writer()
    staging = pipeline.settings.data_dir / "_staging"
    await pipeline.wait_until(lambda: any(staging.rglob("*.parquet")), 30)
    await pipeline.stop()
    start = await pipeline.bucket_of("PlaySong", seq)
    key = BucketKey("PlaySong", start)
    layout = open_layout(pipeline.settings)
    stage(layout, key, ["old-1", "old-2"], 1000, "old_writer")  # written with statistics
    width = pipeline.settings.bucket_width_secs
    result = await close_staged(layout, key, start + width + 5, tmp_path / "scratch")
    assert result.manifest.events == 32
