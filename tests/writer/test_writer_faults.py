"""Writer failure paths: storage errors back off without acking; poison messages are quarantined."""

from __future__ import annotations

import asyncio
import json
import time

from courier.model import bucket_start
from courier.writer import Writer
from courier_testing import eventually, metric_value


async def test_a_storage_error_acks_nothing_backs_off_and_recovers(pipeline):
    ids = [f"s{i}" for i in range(100)]
    await pipeline.publish("PlaySong", [{"track_id": i, "ms_played": 1} for i in ids], ids)
    last = bucket_start(time.time(), pipeline.settings.bucket_width_secs)
    # A file where the writer needs its staging directory: every staging write fails.
    blocker = pipeline.settings.data_dir / "_staging" / "PlaySong"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a directory")
    writer = pipeline.start_writer()

    def failures() -> float:
        name = "courier_writer_storage_errors_total"
        return metric_value(writer.metrics.registry, name, type="PlaySong")

    initial = pipeline.settings.writer.backoff_initial_secs
    await eventually(lambda: failures() >= 1, what="a first failed staging write")
    first = time.monotonic()
    await eventually(lambda: failures() >= 4, what="four failed staging writes")
    # Backoff doubling from backoff_initial_secs: three retries wait 1+2+4 times it, at
    # least. Retrying every flush would be far quicker; a slow machine only adds time.
    took = time.monotonic() - first
    assert took >= 0.9 * 7 * initial, f"4 attempts in {took:.2f}s: backoff must prevent a busy loop"
    assert (await pipeline.transport.progress("PlaySong")).ack_floor_seq == 0
    blocker.unlink()
    await pipeline.start_closer()
    await pipeline.wait_until(lambda: pipeline.reader.manifest("PlaySong", last) is not None, 60)
    got = pipeline.reader.read("PlaySong", 0, time.time() + 10).column("id").to_pylist()
    assert sorted(got) == sorted(ids)


async def test_an_undecodable_message_is_quarantined_and_does_not_block_its_bucket(
    make_settings, pipeline
):
    good = [f"g{i}" for i in range(10)]
    await pipeline.transport.publish_events(
        "PlaySong",
        b'{"id": "x", "this is": not json\n',
        msg_id="poison",
        headers={"Courier-Schema-Version": "1"},
        timeout_secs=5,
    )
    await pipeline.publish("PlaySong", [{"track_id": i, "ms_played": 1} for i in good], good)
    last = bucket_start(time.time(), pipeline.settings.bucket_width_secs)
    settings = make_settings(
        writer={**pipeline.settings.writer.model_dump(), "max_deliveries": 2},
        closer=pipeline.settings.closer.model_dump(),
    )
    writer = Writer(settings, pipeline.transport, pipeline.registry)
    pipeline.tasks.append(asyncio.create_task(writer.run(pipeline.stop_event)))
    await pipeline.start_closer()
    await pipeline.wait_until(lambda: pipeline.reader.manifest("PlaySong", last) is not None, 60)
    got = pipeline.reader.read("PlaySong", 0, time.time() + 10).column("id").to_pylist()
    assert sorted(got) == sorted(good)
    quarantined = list((settings.data_dir / "_quarantine" / "PlaySong").glob("*.json"))
    assert len(quarantined) == 1
    record = json.loads(quarantined[0].read_text())
    assert record["stream_seq"] == 1 and record["reason"] and record["num_delivered"] == 2
