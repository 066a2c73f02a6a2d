"""Pure pieces of the close: fixed-size chunking and the conform step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from courier.closer.dedup import (
    BucketDedup,
    FileOrder,
    StreamOrderError,
    conform,
    exact_chunks,
    in_stream_order,
)
from courier.closer.horizon import DedupHorizon, id_keys
from courier.closer.protocol import write_deduplicated
from courier.model import BucketKey
from courier.settings import CloserSettings
from courier.storage import Layout


def test_chunks_have_exactly_the_asked_rows_whatever_the_input_batching():
    for sizes in ([120], [7, 50, 3, 60], [1] * 120):
        batches, start = [], 0
        for n in sizes:
            batches.append(pa.record_batch({"a": list(range(start, start + n))}))
            start += n
        chunks = list(exact_chunks(iter(batches), 40))
        assert [c.num_rows for c in chunks] == [40, 40, 40]
        assert [v for c in chunks for v in c.column("a").to_pylist()] == list(range(120))


def test_the_last_chunk_may_be_short_and_empty_input_gives_nothing():
    assert [c.num_rows for c in exact_chunks(iter([pa.record_batch({"a": [1, 2, 3]})]), 2)] == [
        2,
        1,
    ]
    assert list(exact_chunks(iter([]), 2)) == []


def test_conform_orders_columns_casts_and_fills_missing_ones_with_nulls():
    schema = pa.schema([("id", pa.string()), ("n", pa.int64()), ("added", pa.bool_())])
    t = pa.table({"n": pa.array([1, 2], pa.int32()), "id": ["a", "b"]})
    out = conform(t, schema)
    assert out.schema == schema
    assert out.column("added").to_pylist() == [None, None]


# -- files already in stream order: read one after another, no sort ------------------------


def _staging(path: Path, rows: list[tuple[int, int, str]]) -> Path:
    """A staging file of ``(seq, idx, id)`` rows, in the order given."""
    pq.write_table(
        pa.table(
            {
                "id": [r[2] for r in rows],
                "n": [r[0] * 1000 + r[1] for r in rows],
                "_seq": pa.array([r[0] for r in rows], pa.uint64()),
                "_idx": pa.array([r[1] for r in rows], pa.uint32()),
            }
        ),
        path,
    )
    return path


def _rows(tmp_path: Path, files: list[Path], closed: list[str], *, sort: bool) -> pa.Table:
    dedup = BucketDedup(files, memory_limit_bytes=64 << 20, spill_dir=tmp_path / "spill", threads=2)
    try:
        keys = dedup.make_keys(id_keys)
        dedup.con.execute("INSERT INTO closed_ids SELECT unnest(?), 0", [closed]).fetchall()
        return pa.Table.from_batches(dedup.rows(4, keys, any_closed=bool(closed), sort=sort))
    finally:
        dedup.close()


def _expected(files_rows: list[list[tuple[int, int, str]]], closed: list[str]) -> list[int]:
    """``n`` of the rows a close keeps, in stream order: the earliest copy of each id."""
    seen: set[str] = set(closed)
    out = []
    for seq, idx, i in sorted(r for rows in files_rows for r in rows):
        if i not in seen:
            seen.add(i)
            out.append(seq * 1000 + idx)
    return out


def test_files_that_do_not_overlap_are_read_in_stream_order_whatever_their_names(tmp_path):
    # Names sort opposite to the stream (writer "b" before "a"); an empty file too.
    a = [(1, 0, "x"), (1, 1, "y"), (2, 0, "x"), (3, 0, "z")]
    b = [(4, 0, "y"), (4, 1, "w"), (5, 0, "v"), (6, 0, "x"), (7, 0, "u")]
    files = [_staging(tmp_path / "b.parquet", b), _staging(tmp_path / "a.parquet", a)]
    files.append(_staging(tmp_path / "c-empty.parquet", []))
    order = in_stream_order(files)
    assert order is not None
    assert [p.name for p in order.paths] == ["c-empty.parquet", "a.parquet", "b.parquet"]
    assert order.rows == [0, 4, 5]
    for closed in ([], ["v", "nowhere"]):
        fast = _rows(tmp_path, files, closed, sort=False)
        assert fast.column("n").to_pylist() == _expected([a, b], closed)
        assert fast.equals(_rows(tmp_path, files, closed, sort=True))
        assert fast.column_names == ["id", "n"]


def test_overlapping_or_unordered_files_take_the_sort_and_give_the_same_rows(tmp_path):
    a = [(1, 0, "x"), (3, 0, "y"), (5, 0, "z")]
    b = [(2, 0, "y"), (4, 0, "x"), (6, 0, "w")]  # two writers at once: interleaved
    c = [(8, 1, "v"), (8, 0, "u")]  # out of order within the file
    for files_rows in ([a, b], [c], [a[:1], c]):
        files = [_staging(tmp_path / f"{i}.parquet", r) for i, r in enumerate(files_rows)]
        assert in_stream_order(files) is None
        got = _rows(tmp_path, files, ["z"], sort=False)
        assert got.column("n").to_pylist() == _expected(files_rows, ["z"])
    # A row equal to the previous file's last (same seq and idx) is an overlap too.
    files = [
        _staging(tmp_path / "d.parquet", [(1, 0, "a")]),
        _staging(tmp_path / "e.parquet", [(1, 0, "b")]),
    ]
    assert in_stream_order(files) is None


def test_rows_read_out_of_stream_order_are_caught_not_written(tmp_path):
    a = [(1, 0, "x"), (2, 0, "y")]
    b = [(3, 0, "z"), (4, 0, "x")]
    files = [_staging(tmp_path / "a.parquet", a), _staging(tmp_path / "b.parquet", b)]
    dedup = BucketDedup(files, memory_limit_bytes=64 << 20, spill_dir=tmp_path / "spill", threads=1)
    try:
        wrong = FileOrder(list(reversed(files)), [2, 2])  # claims b comes first
        with pytest.raises(StreamOrderError):
            list(dedup._rows_in_file_order(4, wrong, np.array([], np.int64)))
    finally:
        dedup.close()


def test_a_close_whose_fast_path_fails_closes_with_the_sort(tmp_path, monkeypatch):
    """Belt and braces: a StreamOrderError midway rewrites every part from sorted rows."""
    a = [(s, 0, f"id-{s % 50}") for s in range(1, 301)]
    files = [_staging(tmp_path / "a.parquet", a[:150]), _staging(tmp_path / "b.parquet", a[150:])]
    ts = pa.timestamp("us", tz="UTC")
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("n", pa.int64()),
            ("published_at", ts),
            ("received_at", ts),
            ("received_dc", pa.string()),
            ("schema_version", pa.int32()),
        ]
    )
    cfg = CloserSettings(row_group_rows=8, max_rows_per_file=16)

    def close(out: str) -> list[tuple[str, int, str]]:
        written = write_deduplicated(
            cfg,
            schema,
            files,
            DedupHorizon(Layout(tmp_path / "root", 3600), 3600),
            BucketKey("T", 0),
            spill_dir=tmp_path / "spill",
            part_path=lambda i: tmp_path / out / f"part-{i:05d}.parquet",
            before_writing=lambda: None,
        )
        assert written.stats.rows == 50
        return [(f.name, f.rows, f.sha256) for f in written.files]

    good = close("good")
    original = BucketDedup._rows_in_file_order

    def fail_midway(self, *args):
        it: Any = original(self, *args)
        try:
            yield next(it)
            raise StreamOrderError("simulated")
        finally:
            it.close()

    monkeypatch.setattr(BucketDedup, "_rows_in_file_order", fail_midway)
    assert close("retried") == good
    assert sorted(p.name for p in (tmp_path / "retried").iterdir()) == [g[0] for g in good]


def test_more_rows_to_drop_than_memory_holds_take_the_sort(tmp_path, monkeypatch):
    import courier.closer.dedup as dedup_module

    a = [(1, 0, "x"), (2, 0, "x"), (3, 0, "y"), (4, 0, "x")]
    files = [_staging(tmp_path / "a.parquet", a)]
    assert in_stream_order(files) is not None
    monkeypatch.setattr(dedup_module, "MAX_DROPPED_IN_MEMORY", 1)  # two to drop
    read_in_order = []
    original = BucketDedup._rows_in_file_order

    def spy(self, *args):
        read_in_order.append(True)
        return original(self, *args)

    monkeypatch.setattr(BucketDedup, "_rows_in_file_order", spy)
    got = _rows(tmp_path, files, [], sort=False)
    assert got.column("n").to_pylist() == _expected([a], []) and not read_in_order
    monkeypatch.setattr(dedup_module, "MAX_DROPPED_IN_MEMORY", 2)
    got = _rows(tmp_path, files, [], sort=False)
    assert got.column("n").to_pylist() == _expected([a], []) and read_in_order


def test_a_closer_takes_arrow_buffers_from_jemalloc_unless_told_otherwise(monkeypatch):
    from courier.closer.protocol import prefer_jemalloc

    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        pytest.skip("this pyarrow has no jemalloc")
    before = pa.default_memory_pool()
    try:
        pa.set_memory_pool(pa.system_memory_pool())
        monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
        prefer_jemalloc()
        assert pa.default_memory_pool().backend_name == "system"
        monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL")
        prefer_jemalloc()
        assert pa.default_memory_pool().backend_name == "jemalloc"
    finally:
        pa.set_memory_pool(before)
