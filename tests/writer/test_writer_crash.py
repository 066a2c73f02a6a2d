"""A writer killed between its staging file and its ack loses nothing and duplicates nothing."""

from __future__ import annotations

import asyncio
import signal
import time

from courier.model import bucket_start
from courier.service.faults import WRITER_CRASH_AFTER_STAGING_ENV
from courier_testing import courier_process, stop_process


async def test_kill_9_after_staging_before_ack_means_redelivery_not_loss(pipeline):
    settings = pipeline.settings
    ids = [f"k{i}" for i in range(300)]
    for chunk in range(3):
        part = ids[chunk * 100 : (chunk + 1) * 100]
        await pipeline.publish("PlaySong", [{"track_id": i, "ms_played": 1} for i in part], part)
    last_bucket = bucket_start(time.time(), settings.bucket_width_secs)

    crashing = courier_process(settings, "writer", env={WRITER_CRASH_AFTER_STAGING_ENV: "1"})
    try:
        for _ in range(300):
            if crashing.poll() is not None:
                break
            await asyncio.sleep(0.1)
        assert crashing.returncode == -signal.SIGKILL
    finally:
        stop_process(crashing)
    staged = list((settings.data_dir / "_staging" / "PlaySong").rglob("*.parquet"))
    assert staged, "the crashed writer left its durable staging file behind"
    progress = await pipeline.transport.progress("PlaySong")
    assert progress.ack_floor_seq == 0, "nothing was acked before the crash"

    # The restarted writer gets the unacked messages again after ack_wait (3 s here).
    pipeline.start_writer()
    await pipeline.start_closer()
    await pipeline.wait_until(
        lambda: pipeline.reader.manifest("PlaySong", last_bucket) is not None, timeout_secs=60
    )
    table = pipeline.reader.read("PlaySong", last_bucket - 60, time.time() + 60)
    got = table.column("id").to_pylist()
    assert sorted(got) == sorted(ids)
    manifests = [
        pipeline.reader.manifest("PlaySong", s.start) for s in pipeline.reader.states("PlaySong")
    ]
    assert sum(m.events for m in manifests if m) == 300
    assert sum(m.duplicates_dropped for m in manifests if m) >= 1
