"""A closer whose storage fails backs off per type instead of retrying every pass (real NATS)."""

from __future__ import annotations

import asyncio
import time

from courier.model import BucketKey, bucket_start


async def test_a_bucket_that_cannot_be_written_is_retried_with_backoff_and_closes_once_fixed(
    pipeline,
):
    width = pipeline.settings.bucket_width_secs
    layout = pipeline.reader.layout
    now = time.time()
    # A regular file where Search's bucket directories go: every write there fails
    # (as root, permissions would not stop us).
    blockers = []
    start = bucket_start(now, width) - 4 * width
    while start < now + 20:
        path = layout.bucket_dir(BucketKey("Search", start))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        blockers.append(path)
        start += width
    closer = await pipeline.start_closer()
    failures = closer.metrics.close_failures.labels("Search")
    await pipeline.wait_until(lambda: failures._value.get() >= 1, 20)
    await asyncio.sleep(3.0)
    poll = pipeline.settings.closer.poll_interval_secs
    # Backoff from the poll interval, doubling: about log2(3 / poll) attempts, not 3 / poll.
    assert failures._value.get() <= 6, failures._value.get()
    assert 3.0 / poll > 10
    # The other type kept closing meanwhile (G5).
    assert pipeline.reader.manifest("PlaySong", time.time() - 2 * width - 1) is not None
    for p in blockers:
        p.unlink()
    target = time.time()
    await pipeline.wait_until(lambda: pipeline.reader.manifest("Search", target) is not None, 40)
