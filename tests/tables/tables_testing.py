"""Closed buckets written straight to disk (parts + ``_SUCCESS``), for the table tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pyarrow as pa

from courier.model import BucketKey, iso_utc
from courier.schema import CompiledType, compile_type, load_definitions
from courier.settings import Settings, load_settings
from courier.storage import (
    Layout,
    Manifest,
    ManifestFile,
    ManifestRepair,
    write_manifest,
    write_parquet_chunks_atomic,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "courier" / "examples" / "schemas"
WIDTH = 3600
T = "PlaySong"
H = 1_795_672_800  # an hour boundary


def play_song(version: int = 1) -> CompiledType:
    """PlaySong v1, or v2 that adds ``skipped`` (a boolean with a default)."""
    d = next(d for d in load_definitions(EXAMPLES) if d.name == T)
    avro = copy.deepcopy(d.avro)
    if version >= 2:
        avro["fields"].append({"name": "skipped", "type": "boolean", "default": False})
    return compile_type(T, avro, version, d.settings)


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(data_dir=tmp_path / "data", bucket_width_secs=WIDTH, **overrides)


def rows(compiled: CompiledType, ids: list[str], published_at: float) -> pa.Table:
    us = int(published_at * 1_000_000)
    payload: dict[str, Any] = {
        "track_id": "t",
        "ms_played": 7,
        "context": {"device": "PHONE", "country": "SE"},
        "tags": ["a", "b"],
        "shuffle": True,
    }
    if compiled.version >= 2:
        payload["skipped"] = True
    docs = [
        {
            "id": i,
            "time": None,
            "sent_at": None,
            "received_at": us,
            "published_at": us + n,
            "schema_version": compiled.version,
            **payload,
        }
        for n, i in enumerate(ids)
    ]
    schema = compiled.arrow_schema
    table = pa.Table.from_pylist(
        [{k: v for k, v in d.items() if k in schema.names} for d in docs],
        schema=pa.schema(
            [pa.field(f.name, pa.int64()) if pa.types.is_timestamp(f.type) else f for f in schema]
        ),
    )
    return pa.Table.from_arrays(
        [c.cast(f.type) for c, f in zip(table.columns, schema, strict=True)], schema=schema
    )


def close(
    layout: Layout,
    key: BucketKey,
    parts: list[pa.Table],
    *,
    version: int = 1,
    closed_at: float | None = None,
) -> Manifest:
    """Write ``parts`` as the bucket's files and its ``_SUCCESS`` (version ``version``)."""
    directory = layout.bucket_dir(key)
    files = []
    for n, part in enumerate(parts):
        name = f"part-{n:05d}.parquet" if version == 1 else f"part-v{version}-{n:05d}.parquet"
        info = write_parquet_chunks_atomic(directory / name, part.schema, [part])
        files.append(
            ManifestFile(name=info.name, bytes=info.bytes, rows=info.rows, sha256=info.sha256)
        )
    events = sum(p.num_rows for p in parts)
    decided = closed_at if closed_at is not None else key.start + WIDTH + 10
    manifest = Manifest(
        event_type=key.event_type,
        bucket_start=iso_utc(key.start),
        bucket_end=iso_utc(key.start + WIDTH),
        bucket_start_epoch=key.start,
        bucket_width_secs=WIDTH,
        events=events,
        input_events=events,
        duplicates_dropped=0,
        duplicates_dropped_previous_bucket=0,
        skewed_in=0,
        stream_seq_ranges=[],
        files=files,
        staging_files=[],
        schema_versions=[1],
        watermark=iso_utc(decided),
        closed_at=iso_utc(decided),
        close_delay_secs=10.0,
        version=version,
        repair=None
        if version == 1
        else ManifestRepair(
            repair_id=f"r{version}",
            reason="test",
            repaired_at=iso_utc(decided),
            previous_manifest=f"_SUCCESS.v{version - 1}",
            previous_events=0,
        ),
    )
    write_manifest(layout.manifest_path(key), manifest)
    return manifest
