"""The closer's table sync in process: it catches up at start, commits what it is handed,
and backs off (without spinning) while the catalog is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
from tables_testing import WIDTH, H, T, close, play_song, rows, settings

from courier.model import BucketKey
from courier.schema import TypeSettings, compile_type
from courier.storage import Layout
from courier.tables import TableSync

V1 = play_song(1)


async def _until(predicate: Callable[[], bool], timeout_secs: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_secs
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def _done(sync: TableSync, key: BucketKey) -> bool:
    return any(r.key == key for r in sync.results)


async def test_the_sync_catches_up_at_start_then_commits_what_it_is_handed(tmp_path: Path):
    s = settings(tmp_path)
    layout = Layout(s.data_dir, WIDTH)
    k0, k1 = BucketKey(T, H), BucketKey(T, H + WIDTH)
    close(layout, k0, [rows(V1, ["a"], H + 1)], closed_at=time.time())  # closed while down
    sync = TableSync(s, layout)
    stop = asyncio.Event()

    async def schemas():
        return {T: V1.arrow_schema}

    task = asyncio.create_task(sync.run(stop, schemas))
    try:
        await _until(lambda: _done(sync, k0))
        assert sync.caught_up
        close(layout, k1, [rows(V1, ["b"], H + WIDTH + 1)], closed_at=time.time())
        sync.submit(k1, V1.arrow_schema)
        await _until(lambda: _done(sync, k1))
    finally:
        stop.set()
        await task
    table = sync.tables.table(T)
    assert table is not None
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == ["a", "b"]


async def test_a_catalog_that_is_down_is_retried_with_backoff_not_in_a_loop(tmp_path: Path):
    later = tmp_path / "later"
    s = settings(
        tmp_path,
        tables={"catalog_uri": f"sqlite:///{later}/c.db", "backoff_max_secs": 1.0},
    )
    layout = Layout(s.data_dir, WIDTH)
    key = BucketKey(T, H)
    close(layout, key, [rows(V1, ["a"], H + 1)], closed_at=time.time())
    sync = TableSync(s, layout)
    stop = asyncio.Event()

    async def schemas():
        return {T: V1.arrow_schema}

    def failures() -> float:
        return sync.metrics.failures.labels(T, "catalog")._value.get()

    started = time.monotonic()
    task = asyncio.create_task(sync.run(stop, schemas))
    try:
        await _until(lambda: failures() >= 3)
        # Attempts 1 s (the backoff, capped at 1 s here) apart, not a busy loop.
        assert time.monotonic() - started >= 1.9
        later.mkdir()
        await _until(lambda: _done(sync, key))
    finally:
        stop.set()
        await task


async def test_a_type_no_table_can_hold_is_reported_once_and_others_still_commit(
    tmp_path: Path,
):
    s = settings(tmp_path)
    layout = Layout(s.data_dir, WIDTH)
    avro = {
        "type": "record",
        "name": "Nano",
        "fields": [{"name": "at", "type": {"type": "long", "logicalType": "timestamp-nanos"}}],
    }
    nano = compile_type("Nano", avro, 1, TypeSettings())
    n_key, t_key = BucketKey("Nano", H), BucketKey(T, H)
    one = pa.table(
        [pa.array(["n"]) if f.name == "id" else pa.nulls(1, f.type) for f in nano.arrow_schema],
        schema=nano.arrow_schema,
    )
    close(layout, n_key, [one], closed_at=time.time())
    close(layout, t_key, [rows(V1, ["a"], H + 1)], closed_at=time.time())
    sync = TableSync(s, layout)
    stop = asyncio.Event()

    async def schemas():
        return {"Nano": nano.arrow_schema, T: V1.arrow_schema}

    def unsupported() -> float:
        return sync.metrics.failures.labels("Nano", "unsupported")._value.get()

    task = asyncio.create_task(sync.run(stop, schemas))
    try:
        await _until(lambda: _done(sync, t_key) and unsupported() == 1 and not sync.pending())
        sync.submit(n_key, nano.arrow_schema)  # the closer closes another Nano bucket
        await _until(lambda: not sync.pending())
        assert unsupported() == 1  # said once per schema version, not on every bucket
    finally:
        stop.set()
        await task
