from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from courier.errors import BucketNotClosedError
from courier.model import INVALID_TYPE, BucketKey, iso_utc, parse_time
from courier.storage.atomic import write_parquet_atomic
from courier.storage.layout import Layout
from courier.storage.manifest import Manifest, ManifestFile, seq_ranges, write_manifest
from courier.storage.reader import BucketReader, BucketState

WIDTH = 3600
H10 = int(parse_time("2026-11-26T10:00:00Z"))
H11 = H10 + WIDTH
H12 = H11 + WIDTH


def _rows(ids: list[str]) -> pa.Table:
    return pa.table(
        {"id": pa.array(ids, pa.string()), "ms_played": pa.array([len(i) for i in ids], pa.int64())}
    )


def _manifest(key: BucketKey, files: list[ManifestFile], events: int) -> Manifest:
    return Manifest(
        event_type=key.event_type,
        bucket_start=iso_utc(key.start),
        bucket_end=iso_utc(key.end(WIDTH)),
        bucket_start_epoch=key.start,
        bucket_width_secs=WIDTH,
        events=events,
        input_events=events,
        duplicates_dropped=0,
        duplicates_dropped_previous_bucket=0,
        skewed_in=0,
        stream_seq_ranges=seq_ranges([1, 2]),
        files=files,
        staging_files=[],
        schema_versions=[1],
        watermark=iso_utc(key.end(WIDTH) + 60),
        closed_at=iso_utc(key.end(WIDTH) + 61),
        close_delay_secs=61.0,
    )


def _close(root: Path, key: BucketKey, ids: list[str]) -> None:
    """Write a closed bucket the way the closer does: files first, manifest last."""
    layout = Layout(root, WIDTH)
    files = []
    if ids:
        info = write_parquet_atomic(layout.bucket_dir(key) / layout.part_name(0), _rows(ids))
        files.append(ManifestFile(info.name, info.bytes, info.rows, info.sha256))
    write_manifest(layout.manifest_path(key), _manifest(key, files, len(ids)))


def _stage(root: Path, key: BucketKey, ids: list[str], first_seq: int = 1) -> Path:
    table = _rows(ids)
    table = table.append_column("_seq", pa.array([first_seq] * len(ids), pa.uint64()))
    table = table.append_column("_idx", pa.array(range(len(ids)), pa.uint32()))
    path = Layout(root, WIDTH).staging_file(key, "w1", first_seq, first_seq)
    write_parquet_atomic(path, table)
    return path


def test_reading_returns_only_closed_buckets_by_default(tmp_path: Path) -> None:
    _close(tmp_path, BucketKey("PlaySong", H10), ["a", "b"])
    _close(tmp_path, BucketKey("PlaySong", H11), ["c"])
    _stage(tmp_path, BucketKey("PlaySong", H12), ["d"])
    table = BucketReader(tmp_path, WIDTH).read("PlaySong", H10 + 1800, H12 + WIDTH)
    assert table.column("id").to_pylist() == ["a", "b", "c"]
    assert table.column_names == ["id", "ms_played"]


def test_reading_covers_buckets_starting_before_the_end_only(tmp_path: Path) -> None:
    for key, ids in ((BucketKey("PlaySong", H10), ["a"]), (BucketKey("PlaySong", H11), ["b"])):
        _close(tmp_path, key, ids)
    reader = BucketReader(tmp_path, WIDTH)
    assert reader.read("PlaySong", H10, H11).column("id").to_pylist() == ["a"]
    assert reader.read("PlaySong", H11 + 10, H11 + 11).column("id").to_pylist() == ["b"]


def test_including_open_buckets_adds_staging_rows_without_staging_columns(
    tmp_path: Path,
) -> None:
    _close(tmp_path, BucketKey("PlaySong", H10), ["a"])
    _stage(tmp_path, BucketKey("PlaySong", H11), ["b", "c"], first_seq=5)
    _stage(tmp_path, BucketKey("PlaySong", H11), ["c"], first_seq=6)
    table = BucketReader(tmp_path, WIDTH).read("PlaySong", H10, H12, include_open=True)
    assert table.column("id").to_pylist() == ["a", "b", "c", "c"]
    assert table.column_names == ["id", "ms_played"]


def test_a_closed_bucket_with_leftover_staging_files_is_read_from_its_manifest(
    tmp_path: Path,
) -> None:
    _stage(tmp_path, BucketKey("PlaySong", H10), ["a", "a"])
    _close(tmp_path, BucketKey("PlaySong", H10), ["a"])
    table = BucketReader(tmp_path, WIDTH).read("PlaySong", H10, H11, include_open=True)
    assert table.column("id").to_pylist() == ["a"]


def test_reading_selects_columns(tmp_path: Path) -> None:
    _close(tmp_path, BucketKey("PlaySong", H10), ["a"])
    table = BucketReader(tmp_path, WIDTH).read("PlaySong", H10, H11, columns=["ms_played"])
    assert table.column_names == ["ms_played"]


def test_reading_nothing_gives_an_empty_table_with_the_type_schema(tmp_path: Path) -> None:
    _close(tmp_path, BucketKey("PlaySong", H10), ["a"])
    _close(tmp_path, BucketKey("PlaySong", H11), [])
    reader = BucketReader(tmp_path, WIDTH)
    empty = reader.read("PlaySong", H11, H12)
    assert empty.num_rows == 0
    assert empty.schema == _rows([]).schema
    assert reader.read("Unknown", H10, H12).num_columns == 0


def test_states_report_closed_and_open_buckets_in_order(tmp_path: Path) -> None:
    _stage(tmp_path, BucketKey("PlaySong", H11), ["b"])
    _close(tmp_path, BucketKey("PlaySong", H10), ["a", "b"])
    _close(tmp_path, BucketKey("AdClick", H10), [])
    reader = BucketReader(tmp_path, WIDTH)
    assert reader.states() == [
        BucketState("AdClick", H10, H11, "closed", 0, 0, 61.0, 0),
        BucketState("PlaySong", H10, H11, "closed", 2, 1, 61.0, 0),
        BucketState("PlaySong", H11, H12, "open", None, 0, None, 1),
    ]
    assert [s.start for s in reader.states("PlaySong", since=H11)] == [H11]


def test_waiting_for_a_bucket_returns_once_its_manifest_appears(tmp_path: Path) -> None:
    key = BucketKey("PlaySong", H10)
    closer = threading.Timer(0.3, _close, args=(tmp_path, key, ["a"]))
    closer.start()
    try:
        began = time.monotonic()
        manifest = BucketReader(tmp_path, WIDTH).wait_closed(
            "PlaySong", H10 + 100, timeout_secs=10, poll_secs=0.05
        )
    finally:
        closer.join()
    assert manifest.events == 1
    assert time.monotonic() - began < 5


def test_waiting_for_a_bucket_that_never_closes_times_out(tmp_path: Path) -> None:
    reader = BucketReader(tmp_path, WIDTH)
    with pytest.raises(BucketNotClosedError, match=r"PlaySong 2026-11-26T10:00:00\.000Z"):
        reader.wait_closed("PlaySong", H10, timeout_secs=0.2, poll_secs=0.05)


def test_the_manifest_of_an_open_bucket_is_none(tmp_path: Path) -> None:
    _close(tmp_path, BucketKey("PlaySong", H10), ["a"])
    reader = BucketReader(tmp_path, WIDTH)
    manifest = reader.manifest("PlaySong", H10 + 59)
    assert manifest is not None and manifest.events == 1
    assert reader.manifest("PlaySong", H11) is None


def test_duckdb_views_query_closed_data_only(tmp_path: Path) -> None:
    _close(tmp_path, BucketKey("PlaySong", H10), ["a", "b"])
    _close(tmp_path, BucketKey("PlaySong", H11), ["c"])
    _stage(tmp_path, BucketKey("PlaySong", H12), ["d"])
    _close(tmp_path, BucketKey("AdClick", H10), [])
    _close(tmp_path, BucketKey(INVALID_TYPE, H10), ["bad"])
    con = BucketReader(tmp_path, WIDTH).duckdb()
    try:
        rows = con.execute('SELECT id FROM "PlaySong" ORDER BY id').fetchall()
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
        invalid = con.execute('SELECT count(*) FROM "_invalid"').fetchone()
    finally:
        con.close()
    assert rows == [("a",), ("b",), ("c",)]
    assert {"PlaySong", "_invalid"} <= views and "AdClick" not in views
    assert invalid == (1,)


def test_an_open_bucket_that_closes_while_being_read_is_read_from_its_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = BucketKey("PlaySong", H10)
    staged = _stage(tmp_path, key, ["a", "a"])
    reader = BucketReader(tmp_path, WIDTH)
    listed = reader.layout.list_staging(key)
    # The closer finishes between the reader's listing and its read of the file.
    _close(tmp_path, key, ["a"])
    staged.unlink()
    monkeypatch.setattr(reader.layout, "staging_bucket_starts", lambda _t: [H10])
    monkeypatch.setattr(reader.layout, "closed_bucket_starts", lambda _t: [])
    monkeypatch.setattr(reader.layout, "list_staging", lambda _k: listed)
    table = reader.read("PlaySong", H10, H11, include_open=True)
    assert table.column("id").to_pylist() == ["a"]
