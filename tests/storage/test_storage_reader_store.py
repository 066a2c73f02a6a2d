"""BucketReader over object stores: closed buckets (manifest + parts) read from S3 and GCS emulators."""

from __future__ import annotations

import gc
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bench._emulators import FakeGcs, MotoS3

from courier.errors import BucketNotClosedError, ConfigError
from courier.model import BucketKey, iso_utc, parse_time
from courier.storage import BucketReader, Layout
from courier.storage.manifest import Manifest, ManifestFile, encode_manifest, seq_ranges
from courier.storage.store import BucketStore, open_store

WIDTH = 3600
H10 = int(parse_time("2026-11-26T10:00:00Z"))
H11 = H10 + WIDTH
H12 = H11 + WIDTH


@pytest.fixture(params=["s3", "gs"])
def store_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A store URL on a fresh bucket of a real emulator, reachable through the environment."""
    emulator: MotoS3 | FakeGcs = request.getfixturevalue(
        "moto_s3" if request.param == "s3" else "fake_gcs"
    )
    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)
    return f"{request.param}://{emulator.new_bucket()}/courier"


def _parquet(ids: list[str]) -> bytes:
    sink = io.BytesIO()
    table = pa.table({"id": ids, "ms_played": [len(i) for i in ids]})
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _close(store: BucketStore, key: BucketKey, ids: list[str]) -> None:
    """Close a bucket the way the closer will on a store: parts first, ``_SUCCESS`` last, create-only."""
    layout = Layout(store, WIDTH)
    files = []
    if ids:
        data = _parquet(ids)
        store.put(layout.part_key(key, 0), data)
        files.append(ManifestFile(layout.part_name(0), len(data), len(ids), "0" * 64))
    manifest = Manifest(
        event_type=key.event_type,
        bucket_start=iso_utc(key.start),
        bucket_end=iso_utc(key.end(WIDTH)),
        bucket_start_epoch=key.start,
        bucket_width_secs=WIDTH,
        events=len(ids),
        input_events=len(ids),
        duplicates_dropped=0,
        duplicates_dropped_previous_bucket=0,
        skewed_in=0,
        stream_seq_ranges=seq_ranges([1]),
        files=files,
        staging_files=[],
        schema_versions=[1],
        watermark=iso_utc(key.end(WIDTH) + 60),
        closed_at=iso_utc(key.end(WIDTH) + 61),
        close_delay_secs=61.0,
    )
    store.create(layout.manifest_key(key), encode_manifest(manifest))


def _stage(store: BucketStore, key: BucketKey, ids: list[str]) -> None:
    table = pa.table(
        {
            "id": ids,
            "ms_played": [len(i) for i in ids],
            "_seq": pa.array([1] * len(ids), pa.uint64()),
            "_idx": pa.array(range(len(ids)), pa.uint32()),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    store.put(Layout(store, WIDTH).staging_key(key, "w1", 1, 1), sink.getvalue())


def test_closed_buckets_are_read_from_the_store_by_url(store_url: str, tmp_path: Path) -> None:
    store = open_store(store_url)
    _close(store, BucketKey("PlaySong", H10), ["a", "b"])
    _close(store, BucketKey("PlaySong", H11), [])
    _stage(store, BucketKey("PlaySong", H12), ["c", "c"])
    reader = BucketReader(store_url, WIDTH, scratch_dir=tmp_path / "scratch")
    assert reader.read("PlaySong", H10, H12 + WIDTH).column("id").to_pylist() == ["a", "b"]
    assert reader.read("PlaySong", H10, H12 + WIDTH, include_open=True).column(
        "id"
    ).to_pylist() == ["a", "b", "c", "c"]
    assert reader.read("PlaySong", H10, H11, columns=["ms_played"]).column_names == ["ms_played"]
    assert list((tmp_path / "scratch").iterdir()) == []  # scratch copies are gone


def test_bucket_states_and_manifests_come_from_the_store(store_url: str) -> None:
    store = open_store(store_url)
    _close(store, BucketKey("PlaySong", H10), ["a"])
    _stage(store, BucketKey("PlaySong", H11), ["b"])
    reader = BucketReader(store, WIDTH)
    states = reader.states()
    assert [(s.event_type, s.start, s.state, s.events) for s in states] == [
        ("PlaySong", H10, "closed", 1),
        ("PlaySong", H11, "open", None),
    ]
    assert reader.layout.event_types() == ["PlaySong"]
    manifest = reader.manifest("PlaySong", H10 + 5)
    assert manifest is not None and manifest.events == 1
    assert reader.manifest("PlaySong", H11) is None
    assert reader.wait_closed("PlaySong", H10, timeout_secs=1).events == 1
    with pytest.raises(BucketNotClosedError, match=r"no (s3|gs)://.*_SUCCESS"):
        reader.wait_closed("PlaySong", H11, timeout_secs=0.2, poll_secs=0.05)


def test_sql_over_an_object_store_queries_scratch_copies_of_closed_files(
    store_url: str, tmp_path: Path
) -> None:
    store = open_store(store_url)
    _close(store, BucketKey("PlaySong", H10), ["a", "b"])
    _close(store, BucketKey("PlaySong", H11), ["c"])
    _stage(store, BucketKey("PlaySong", H12), ["open"])
    con = BucketReader(store_url, WIDTH, scratch_dir=tmp_path).duckdb()
    rows = con.execute('SELECT id FROM "PlaySong" ORDER BY id').fetchall()
    assert rows == [("a",), ("b",), ("c",)]
    assert list(tmp_path.iterdir())  # the copies live as long as the connection
    con.close()
    del con
    gc.collect()
    assert list(tmp_path.iterdir()) == []


def test_path_methods_of_the_layout_refuse_an_object_store(store_url: str) -> None:
    layout = Layout(store_url, WIDTH)
    assert layout.manifest_key(BucketKey("T", H10)) == "T/date=2026-11-26/hour=10/_SUCCESS"
    with pytest.raises(ConfigError, match="cannot run on an object store yet"):
        layout.manifest_path(BucketKey("T", H10))
