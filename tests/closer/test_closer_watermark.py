"""When buckets close: watermarks, grace, empty buckets, per-type independence (real NATS)."""

from __future__ import annotations

import asyncio
import time

from courier.model import bucket_start
from courier.transport import WRITER_CONSUMER


def _payloads(n: int) -> list[dict[str, object]]:
    return [{"track_id": f"t{i}", "ms_played": i} for i in range(n)]


async def test_empty_buckets_are_closed_with_zero_count_manifests(pipeline):
    await pipeline.start_closer()
    width = pipeline.settings.bucket_width_secs
    first = bucket_start(time.time(), width)
    await pipeline.wait_until(
        lambda: pipeline.reader.manifest("Search", first + width) is not None, 20
    )
    m = pipeline.reader.manifest("Search", first + width)
    assert m is not None
    assert (m.events, m.input_events, m.files, m.duplicates_dropped) == (0, 0, [], 0)
    assert m.bucket_width_secs == width


async def test_events_land_exactly_once_in_their_bucket(pipeline):
    seq = await pipeline.publish("PlaySong", _payloads(50), [f"a{i}" for i in range(50)])
    pipeline.start_writer()
    await pipeline.start_closer()
    published = bucket_start(time.time(), pipeline.settings.bucket_width_secs)
    await pipeline.wait_until(lambda: pipeline.reader.manifest("PlaySong", published) is not None)
    table = pipeline.reader.read("PlaySong", published - 10, time.time() + 10)
    assert sorted(table.column("id").to_pylist()) == sorted(f"a{i}" for i in range(50))
    total = sum(
        m.events
        for s in pipeline.reader.states("PlaySong")
        if (m := pipeline.reader.manifest("PlaySong", s.start)) is not None
    )
    assert total == 50
    m = next(
        pipeline.reader.manifest("PlaySong", s.start)
        for s in pipeline.reader.states("PlaySong")
        if s.events
    )
    assert m.stream_seq_ranges[0].first == seq


async def test_an_unacked_message_holds_its_bucket_open_while_other_types_keep_closing(pipeline):
    width = pipeline.settings.bucket_width_secs
    await pipeline.publish("PlaySong", _payloads(1), ["held"])
    # A consumer that takes the message and never acks it (a stalled writer).
    consumer = await pipeline.transport.pull_consumer("PlaySong", WRITER_CONSUMER)
    got = await consumer.fetch(1, 2.0)
    assert len(got) == 1
    # The store time picks the bucket; a clock read after the publish can be a bucket later.
    held_bucket = bucket_start(got[0].published_at, width)
    await pipeline.start_closer()
    # Meanwhile Search, with nothing unacked, keeps closing buckets after the held one.
    await pipeline.wait_until(
        lambda: pipeline.reader.manifest("Search", held_bucket + 3 * width) is not None, 20
    )
    assert pipeline.reader.manifest("PlaySong", held_bucket) is None
    closed = [s.start for s in pipeline.reader.states("PlaySong") if s.state == "closed"]
    assert all(start < held_bucket for start in closed)
    # Once the writer handles it (redelivery after nak), the bucket closes with the event.
    await got[0].nak()
    pipeline.start_writer()
    await pipeline.wait_until(
        lambda: pipeline.reader.manifest("PlaySong", held_bucket) is not None, 20
    )
    table = pipeline.reader.read("PlaySong", held_bucket, held_bucket + width)
    assert table.column("id").to_pylist() == ["held"]
    await consumer.unsubscribe()
    await asyncio.sleep(0)


async def test_a_closer_clock_behind_by_the_fault_offset_holds_its_watermark_back(
    pipeline, monkeypatch
):
    from courier.service.faults import CLOCK_OFFSET_ENV

    monkeypatch.setenv(CLOCK_OFFSET_ENV, "-30")
    closer = await pipeline.start_closer()
    wm, oldest = await closer.watermark("Search")
    skew = pipeline.settings.max_clock_skew_secs
    assert oldest is None
    assert time.time() - 30 - skew - 1 < wm <= time.time() - 30 - skew
