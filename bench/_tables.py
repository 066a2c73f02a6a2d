"""The closer's table commit (``courier.tables``) after a close, for ``bench.closer``.

The closer commits a closed bucket to its Iceberg table after ``_SUCCESS``, off the
close path; these figures are how long the table lags ``_SUCCESS``: the first
commit of a type (opens the embedded SQLite catalog, creates the table), then more
buckets (hard links of the same parts, closed now) into the existing table,
expiring snapshots as the closer does (every ``tables.max_snapshots / 2`` commits).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import msgspec

from bench._data import compiled_example
from bench._report import percentile
from courier.model import BucketKey, iso_utc
from courier.settings import load_settings
from courier.storage import Layout, read_manifest, write_manifest
from courier.tables import BucketTables


def measure_table_commits(
    root: Path, key: BucketKey, more: int, *, width: int
) -> dict[str, object]:
    """Commit the closed bucket ``key``, then ``more`` copies of it as later buckets (hard
    links), each as the closer's table sync does; seconds per commit."""
    settings = load_settings(data_dir=root, bucket_width_secs=width)
    layout = Layout(root, width)
    schema = compiled_example().arrow_schema
    manifest = read_manifest(layout.manifest_path(key))
    tables = BucketTables(settings, layout)
    t0 = time.perf_counter()
    first = tables.sync(key, schema)
    first_secs = time.perf_counter() - t0
    secs: list[float] = []
    cpu_secs: list[float] = []
    expire_secs: list[float] = []
    for i in range(1, more + 1):
        k = BucketKey(key.event_type, key.start + i * width)
        for f in manifest.files:
            dst = layout.bucket_dir(k) / f.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(layout.bucket_dir(key) / f.name, dst)
        fresh = msgspec.structs.replace(
            manifest, bucket_start_epoch=k.start, closed_at=iso_utc(time.time())
        )
        write_manifest(layout.manifest_path(k), fresh)
        t0, cpu0 = time.perf_counter(), time.process_time()
        result = tables.sync(k, schema)
        secs.append(time.perf_counter() - t0)
        cpu_secs.append(time.process_time() - cpu0)
        assert result.outcome == "appended", result
        if i % max(1, settings.tables.max_snapshots // 2) == 0:  # as the closer's sync does
            t0 = time.perf_counter()
            tables.expire(key.event_type)
            expire_secs.append(time.perf_counter() - t0)
    table = tables.table(key.event_type)
    assert table is not None
    t0 = time.perf_counter()
    again = tables.sync(key, schema)
    lookup_secs = time.perf_counter() - t0
    assert first.outcome == "appended" and again.outcome == "already"
    return {
        "table_first_commit_secs": round(first_secs, 3),
        "table_commits": len(secs),
        "table_commit_p50_secs": round(percentile(secs, 50), 3),
        "table_commit_p99_secs": round(percentile(secs, 99), 3),
        "table_commit_max_secs": round(max(secs, default=float("nan")), 3),
        "table_commit_cpu_p50_secs": round(percentile(cpu_secs, 50), 3),
        "table_expire_max_secs": round(max(expire_secs, default=float("nan")), 3),
        "table_recommit_lookup_secs": round(lookup_secs, 3),
        "table_snapshots": len(table.snapshots()),
    }
