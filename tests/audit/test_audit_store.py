"""The auditor's delivered counts read closed buckets through the bucket store
(in memory, and S3 on a moto_server process): what a bucket holds, and a lost part."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench._emulators import MotoS3

from courier.audit.report import DeliveredScanner
from courier.model import BucketKey
from courier.storage import Layout
from courier.storage.store import BucketStore, MemoryStore
from staging_testing import close_staged, stage

WIDTH = 3600
START = 1_795_000_000 - 1_795_000_000 % WIDTH
KEY = BucketKey("PlaySong", START)


@pytest.fixture(params=["memory", "s3"])
def store(request: pytest.FixtureRequest) -> BucketStore:
    if request.param == "memory":
        return MemoryStore()
    from courier.storage.store.s3 import S3BucketStore

    moto: MotoS3 = request.getfixturevalue("moto_s3")
    return S3BucketStore(moto.new_bucket(), "events", **moto.store_config())


async def test_delivered_counts_come_from_the_store_and_a_lost_part_is_reported(
    store: BucketStore, tmp_path: Path
) -> None:
    layout = Layout(store, WIDTH)
    scanner = DeliveredScanner(layout, scratch_dir=tmp_path / "scratch")
    assert scanner.check(KEY) is None  # open: no _SUCCESS yet
    stage(layout, KEY, ["a", "b", "c"], 1, "w1")
    stage(layout, KEY, ["c", "d"], 4, "w2")
    await close_staged(layout, KEY, START + WIDTH + 20, tmp_path / "closer")
    got = scanner.check(KEY)
    assert got is not None and got.error is None
    assert (got.rows_found, got.distinct_ids, got.missing_files) == (4, 4, [])
    store.delete(layout.part_key(KEY, 0))
    lost = scanner.check(KEY)
    assert lost is not None and lost.missing_files == ["part-00000.parquet"]
    assert lost.rows_found == 0
