"""End to end on a real nats-server: a writer and a closer fill buckets, the closer commits
them to the type's Iceberg table, a schema version is added, a bucket is re-closed; the table
read with pyiceberg holds the union of the closed buckets, every id once. A catalog that is
down delays the table, never the close, and the audit reports what is missing."""

from __future__ import annotations

import asyncio
import copy
import time
from pathlib import Path

import pytest

from courier.closer import Catalog, Closer
from courier.closer.reclose import BucketRecloser
from courier.model import BucketKey, bucket_start
from courier.schema import TypeDefinition
from courier.storage import read_manifest
from courier.tables import BucketTables, TableStatus, expire_snapshots
from courier.tables.index import SUMMARY_BUCKET
from courier.transport import CATALOG_KV
from courier_testing import FAST, Pipeline, example_definitions, open_pipeline

T = "PlaySong"
S = "Search"  # a second type, with a map column


def _payloads(n: int, **extra: object) -> list[dict[str, object]]:
    return [{"track_id": "t", "ms_played": i, **extra} for i in range(n)]


async def _at_start_of_a_bucket(width: int) -> int:
    start = bucket_start(time.time(), width) + width
    await asyncio.sleep(max(0.0, start - time.time()) + 0.05)
    return start


def _committed(closer: Closer, key: BucketKey, version: int = 1) -> bool:
    assert closer.tables is not None
    return any(r.key == key and r.version == version for r in closer.tables.results)


def _closed_ids(p: Pipeline, event_type: str = T) -> list[str]:
    """Every id in every closed bucket of the type, read through the bucket contract."""
    return p.reader.read(event_type, 0, 2e9).column("id").to_pylist()


async def _v2(p: Pipeline) -> None:
    """Register PlaySong v2: adds ``skipped`` (boolean, default false)."""
    d = example_definitions(T)[0]
    avro = copy.deepcopy(d.avro)
    avro["fields"].append({"name": "skipped", "type": "boolean", "default": False})
    await p.registry.apply([TypeDefinition(T, avro, d.settings)])
    p.compiled = await p.registry.compiled()


@pytest.fixture
async def pipeline(make_settings):
    s = make_settings(**FAST, tables={"enabled": True, "backoff_max_secs": 1.0})
    p = await open_pipeline(s, example_definitions(T, S))
    try:
        yield p
    finally:
        await p.stop()
        await p.transport.close()


async def test_the_table_holds_every_closed_bucket_once_across_a_schema_version_and_a_re_close(
    pipeline,
):
    p = pipeline
    width = p.settings.bucket_width_secs
    p.start_writer()
    closer = await p.start_closer()
    tables = BucketTables(p.settings, p.reader.layout)

    # Bucket H (schema v1), committed by the closer after it closed.
    h = await _at_start_of_a_bucket(width)
    await p.publish(T, _payloads(10), [f"a{i}" for i in range(10)])
    await p.publish(T, _payloads(3), ["a0", "a1", "a2"])  # retries: deduplicated
    searches = [{"query": "q", "results": i, "filters": {"genre": "jazz"}} for i in range(4)]
    await p.publish(S, searches, [f"s{i}" for i in range(4)])
    k1 = BucketKey(T, h)
    await p.wait_until(lambda: _committed(closer, k1) and _committed(closer, BucketKey(S, h)), 30)
    first = tables.table(T)
    assert first is not None
    after_h = first.current_snapshot()
    assert after_h is not None

    # Schema v2, and bucket H2 with the new column.
    await _v2(p)  # the writer holds v2 messages back until it has re-read the registry
    h2 = await _at_start_of_a_bucket(width)
    await p.publish(T, _payloads(5, skipped=True), [f"b{i}" for i in range(5)])
    k2 = BucketKey(T, h2)
    await p.wait_until(lambda: _committed(closer, k2), 30)

    # Time travel: the snapshot after H's commit holds H alone, with v1's columns.
    table = tables.table(T)
    assert table is not None
    old = table.scan(snapshot_id=after_h.snapshot_id).to_arrow()
    assert sorted(old.column("id").to_pylist()) == sorted(f"a{i}" for i in range(10))
    assert "skipped" not in old.column_names
    now = table.scan().to_arrow()
    skipped = dict(
        zip(now.column("id").to_pylist(), now.column("skipped").to_pylist(), strict=True)
    )
    assert {skipped[f"b{i}"] for i in range(5)} == {True}
    assert {skipped[f"a{i}"] for i in range(10)} == {None}

    # Re-close H (a repair): one overwrite snapshot replaces version 1's files.
    for part in p.reader.layout.bucket_dir(k1).glob("part-*.parquet"):
        part.unlink()  # lost on storage
    catalog = Catalog(await p.transport.key_value(CATALOG_KV), "repair", 30.0)
    await BucketRecloser(p.settings, p.transport, catalog).reclose(
        k1, p.compiled[T], repair_id="r1", reason="part lost", now=time.time()
    )
    assert read_manifest(p.reader.layout.manifest_path(k1)).version == 2

    table = tables.table(T)
    assert table is not None
    last = table.snapshots()[-1]
    assert last.summary is not None and last.summary.operation.value == "overwrite"
    assert last.summary[SUMMARY_BUCKET] == k1.label()
    ids = table.scan().to_arrow().column("id").to_pylist()
    closed = _closed_ids(p)
    assert len(ids) == len(set(ids)) == 15
    assert sorted(ids) == sorted(closed)
    # The other type's table: its bucket, map column included.
    search = tables.table(S)
    assert search is not None
    rows = search.scan().to_arrow()
    assert sorted(rows.column("id").to_pylist()) == sorted(_closed_ids(p, S))
    assert rows.column("filters").to_pylist()[0] == [("genre", "jazz")]
    # Expiry down to the current snapshot: every file a manifest lists stays, reads the same.
    expire_snapshots(table, retention_secs=0.0, now=time.time() + 1)
    layout = p.reader.layout
    for start in layout.closed_bucket_starts(T):
        for f in read_manifest(layout.manifest_path(BucketKey(T, start))).files:
            assert (layout.bucket_dir(BucketKey(T, start)) / f.name).exists()
    table = tables.table(T)
    assert table is not None and len(table.snapshots()) == 1
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == sorted(closed)
    # Nothing left to commit: the closer's view and the audit's agree.
    assert tables.uncommitted(T) == []
    status = TableStatus(p.settings, p.reader.layout)
    assert status(k1, read_manifest(p.reader.layout.manifest_path(k1))) is True


async def test_a_catalog_that_is_down_delays_the_table_never_the_close(pipeline, tmp_path: Path):
    p = pipeline
    width = p.settings.bucket_width_secs
    later = tmp_path / "catalog-later"  # SQLite cannot open a file in a missing directory
    s = p.settings.model_copy(
        update={
            "tables": p.settings.tables.model_copy(
                update={"catalog_uri": f"sqlite:///{later}/catalog.db"}
            )
        }
    )
    p.settings = s
    p.start_writer()
    closer = await p.start_closer()
    h = await _at_start_of_a_bucket(width)
    await p.publish(T, _payloads(4), [f"d{i}" for i in range(4)])
    k = BucketKey(T, h)

    # The bucket closes on time although every commit attempt fails.
    assert closer.tables is not None
    await p.wait_until(lambda: k in closer.tables.pending(), 30)
    manifest = read_manifest(p.reader.layout.manifest_path(k))
    assert manifest.close_delay_secs < width + 5
    status = TableStatus(s, p.reader.layout)
    assert status(k, manifest) is None  # catalog unreachable: unknown, not "missing"

    # The catalog comes back: the closer's backoff retries and the table catches up.
    later.mkdir()
    await p.wait_until(lambda: _committed(closer, k), 30)
    tables = BucketTables(s, p.reader.layout)
    table = tables.table(T)
    assert table is not None
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == [f"d{i}" for i in range(4)]


async def test_a_closer_that_starts_commits_the_buckets_closed_while_tables_were_off(
    pipeline,
):
    p = pipeline
    width = p.settings.bucket_width_secs
    on = p.settings
    p.settings = on.model_copy(update={"tables": on.tables.model_copy(update={"enabled": False})})
    p.start_writer()
    off_closer = await p.start_closer()
    assert off_closer.tables is None
    h = await _at_start_of_a_bucket(width)
    await p.publish(T, _payloads(3), ["e0", "e1", "e2"])
    k = BucketKey(T, h)
    await p.wait_until(lambda: p.reader.manifest(T, h) is not None, 30)
    await p.stop()

    # The audit's check sees the bucket closed but not in its table.
    layout = p.reader.layout
    status = TableStatus(on, layout)
    assert status(k, read_manifest(layout.manifest_path(k))) is False

    # A closer with tables on catches up at start.
    p.settings = on
    closer = await p.start_closer()
    await p.wait_until(lambda: _committed(closer, k), 30)
    assert TableStatus(on, layout)(k, read_manifest(layout.manifest_path(k))) is True
