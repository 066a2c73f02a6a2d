"""A closer whose storage fails backs off per type instead of retrying every pass (real NATS)."""

from __future__ import annotations

import time

from courier.model import BucketKey, bucket_start
from courier_testing import eventually, metric_value


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

    def failures() -> float:
        return metric_value(
            closer.metrics.registry, "courier_closer_close_failures_total", type="Search"
        )

    poll = pipeline.settings.closer.poll_interval_secs
    await eventually(lambda: failures() >= 1, what="a first failed close of Search")
    first = time.monotonic()
    await eventually(lambda: failures() >= 5, what="five failed closes of Search")
    # Backoff from the poll interval, doubling: four retries take 1+2+4+8 polls, at
    # least. Retrying every pass would take 4 polls; a slow machine only adds time.
    took = time.monotonic() - first
    assert took >= 0.9 * 15 * poll, f"5 attempts in {took:.2f}s: backoff must prevent a busy loop"
    # The other type kept closing meanwhile (G5).
    assert pipeline.reader.manifest("PlaySong", time.time() - 2 * width - 1) is not None
    for p in blockers:
        p.unlink()
    target = time.time()
    await pipeline.wait_until(lambda: pipeline.reader.manifest("Search", target) is not None, 40)
