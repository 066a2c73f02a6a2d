"""courier repair redeliver on a real stack: closed buckets never change, every id stays once.

A real nats-server, the writer and the closer run; the redelivery goes through
the gateway's admin route. Buckets are 2 s wide (grace 1 s).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pyarrow.parquet as pq

from courier.closer import Catalog
from courier.closer.reclose import BucketRecloser
from courier.gateway import create_app
from courier.model import BucketKey, bucket_start
from courier.storage import Layout, read_manifest
from courier.transport import CATALOG_KV

BATCHES = 3
PER_BATCH = 20


def _layout(pipeline) -> Layout:
    return Layout(pipeline.settings.data_dir, pipeline.settings.bucket_width_secs)


def _closed(pipeline) -> dict[int, bytes]:
    """Manifest bytes of every closed PlaySong bucket, by bucket start."""
    layout = _layout(pipeline)
    return {
        s: layout.manifest_path(BucketKey("PlaySong", s)).read_bytes()
        for s in layout.closed_bucket_starts("PlaySong")
    }


def _ids_in_closed_buckets(pipeline) -> Counter[str]:
    """Every id in the part files present in closed buckets (read file by file)."""
    layout = _layout(pipeline)
    ids: Counter[str] = Counter()
    for s in layout.closed_bucket_starts("PlaySong"):
        for part in sorted(layout.bucket_dir(BucketKey("PlaySong", s)).glob("part-*.parquet")):
            ids.update(pq.read_table(part, columns=["id"]).column("id").to_pylist())
    return ids


async def _deliver_and_close(pipeline) -> list[str]:
    """Publish BATCHES messages, each in its own bucket, and wait until all are closed."""
    width = pipeline.settings.bucket_width_secs
    pipeline.start_writer()
    await pipeline.start_closer()
    ids: list[str] = []
    for b in range(BATCHES):
        batch = [f"b{b}-{i}" for i in range(PER_BATCH)]
        await pipeline.publish("PlaySong", [{"track_id": "t", "ms_played": 1}] * PER_BATCH, batch)
        ids += batch
        await asyncio.sleep(width)
    last = bucket_start(time.time(), width) - width
    await pipeline.wait_until(lambda: pipeline.reader.manifest("PlaySong", last) is not None, 30)
    assert _ids_in_closed_buckets(pipeline) == Counter(ids)
    return ids


async def _redeliver_from_seq_1(pipeline) -> float:
    app = create_app(pipeline.settings, registry=pipeline.registry)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        r = await client.post("/v1/admin/redeliver/PlaySong", json={"from_seq": 1})
    assert r.status_code == 200, r.text
    assert r.json()["counts"] == {"messages": BATCHES}
    return time.time()


async def _wait_for_the_next_close(pipeline, after: float) -> None:
    """Wait until the bucket after the one holding ``after`` is closed."""
    width = pipeline.settings.bucket_width_secs
    nxt = bucket_start(after, width) + width
    await pipeline.wait_until(lambda: pipeline.reader.manifest("PlaySong", nxt) is not None, 40)


def _closed_since(pipeline, before: dict[int, bytes]):
    """Manifests of the buckets closed since ``before`` (during or after the repair)."""
    layout = _layout(pipeline)
    return [
        read_manifest(layout.manifest_path(BucketKey("PlaySong", s)))
        for s in layout.closed_bucket_starts("PlaySong")
        if s not in before
    ]


async def test_a_redelivery_from_seq_1_changes_no_closed_bucket_and_keeps_every_id_once(
    pipeline,
):
    ids = await _deliver_and_close(pipeline)
    before = _closed(pipeline)

    repaired_at = await _redeliver_from_seq_1(pipeline)
    await _wait_for_the_next_close(pipeline, repaired_at)

    after = _closed(pipeline)
    assert {s: after[s] for s in before} == before  # closed buckets never change
    assert _ids_in_closed_buckets(pipeline) == Counter(ids)  # every id exactly once
    manifests = _closed_since(pipeline, before)
    # The redelivered events really came back, and the closer dropped all of them.
    assert sum(m.duplicates_dropped for m in manifests) == len(ids)
    assert sum(m.skewed_in for m in manifests) == 0
    staging = pipeline.settings.data_dir / "_staging"
    await pipeline.wait_until(lambda: not list(staging.rglob("*.parquet")), 10)  # step 7


async def test_events_missing_from_a_closed_bucket_come_back_once_in_a_later_bucket_as_skewed(
    pipeline,
):
    ids = await _deliver_and_close(pipeline)
    layout = _layout(pipeline)
    lost_bucket = next(s for s in layout.closed_bucket_starts("PlaySong") if _has_events(layout, s))
    lost_dir = layout.bucket_dir(BucketKey("PlaySong", lost_bucket))
    parts = sorted(lost_dir.glob("part-*.parquet"))
    lost = {i for p in parts for i in pq.read_table(p).column("id").to_pylist()}
    assert lost
    for p in parts:
        p.unlink()  # a bucket file lost at rest
    before = _closed(pipeline)

    repaired_at = await _redeliver_from_seq_1(pipeline)
    await _wait_for_the_next_close(pipeline, repaired_at)

    after = _closed(pipeline)
    assert {s: after[s] for s in before} == before
    assert not list(lost_dir.glob("part-*.parquet"))  # the damaged bucket is not rewritten
    assert _ids_in_closed_buckets(pipeline) == Counter(ids)  # the lost ids are back, once
    manifests = _closed_since(pipeline, before)
    assert sum(m.skewed_in for m in manifests) == len(lost)
    assert sum(m.duplicates_dropped for m in manifests) == len(ids) - len(lost)

    # A re-close of the damaged bucket afterwards must not bring them back a second time:
    # they stay where the redelivery put them.
    catalog = Catalog(await pipeline.transport.key_value(CATALOG_KV), "repair", 30.0)
    result = await BucketRecloser(pipeline.settings, pipeline.transport, catalog).reclose(
        BucketKey("PlaySong", lost_bucket),
        pipeline.compiled["PlaySong"],
        repair_id="reclose-after-redeliver",
        reason="test",
        now=time.time(),
    )
    assert result.manifest.events == 0
    m = result.manifest
    assert m.duplicates_dropped_previous_bucket + m.duplicates_dropped_other_buckets == len(lost)
    assert _ids_in_closed_buckets(pipeline) == Counter(ids)


def _has_events(layout: Layout, start: int) -> bool:
    path: Path = layout.manifest_path(BucketKey("PlaySong", start))
    return read_manifest(path).events > 0
