"""The closer alone: dedup + compaction of one large bucket built from staging files.

Builds ``--rows`` rows of PlaySong (≈360-byte events) in ``--files`` staging
files, a share of them duplicates of rows in earlier files (redeliveries),
then times :class:`courier.closer.BucketCloser` closing the bucket: read the
staging files, order, drop duplicate ids, write zstd Parquet parts, manifest,
delete staging. rows/s = input rows / elapsed. ``lost``/``duplicated`` compare
the bucket with the distinct ids that went in.

With ``--horizon-ids N`` the type already has ``--horizon-buckets`` closed hourly
buckets (default 168: 7 days) holding N ids in all, each with its id index, and
``--horizon-retry-share`` of the new bucket's rows are copies of ids from the
``--retry-from-buckets`` most recent of them (retries after a lost answer): the
close must drop exactly those (G2's dedup horizon). The old buckets' parts hold
only their ``id`` column (all the exact check reads); ``index_bytes_per_id`` and
``index_share_of_bucket_bytes`` size the index against this run's bucket.

With ``--table-commits N`` (0 = off), then the bucket's commit to its Iceberg
table, as the closer runs it after the close (``bench._tables``).

With ``--store s3`` (or ``gcs``) the staging files are uploaded to a moto_server
(fake-gcs-server) process first, and the close reads them from there through scratch
copies and writes its parts, index and ``_SUCCESS`` there: the closer on object storage.

``python -m bench.closer --rows 2000000``
``python -m bench.closer --rows 2000000 --horizon-ids 100000000``
``python -m bench.closer --rows 2000000 --store s3``
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bench._data import arrow_rows, compiled_example
from bench._report import emit
from bench._tables import measure_table_commits
from bench.loadgen.events import IdSource
from courier.closer import BucketCloser, Catalog
from courier.closer.horizon import DedupHorizon, keys_query, write_index_file
from courier.model import BucketKey, bucket_start, iso_utc, uuid7
from courier.settings import CloserSettings, load_settings
from courier.storage import (
    BucketReader,
    Layout,
    Manifest,
    ManifestFile,
    write_manifest,
    write_parquet_atomic,
)
from courier.transport import MemoryKeyValue

WIDTH = 3600


def build_horizon(
    root: Path, key: BucketKey, ids_total: int, buckets: int, retry_from: int
) -> tuple[list[str], int]:
    """``buckets`` closed hourly buckets before ``key`` holding ``ids_total`` random UUIDv7
    ids, each with its index; returns (ids of the ``retry_from`` newest, index bytes)."""
    layout = Layout(root, WIDTH)
    horizon = DedupHorizon(layout, CloserSettings().dedup_horizon_secs)
    per = max(1, ids_total // buckets)
    con = duckdb.connect(config={"threads": 2})
    con.execute("SELECT setseed(0.42)").fetchall()
    recent: list[str] = []
    index_bytes = 0
    for k in range(1, buckets + 1):
        old = BucketKey(key.event_type, key.start - k * WIDTH)
        ms0 = old.start * 1000
        ids = con.sql(
            f"""
            SELECT lower(printf('%08x-%04x-7%03x-%04x-%012x', ms >> 16, ms & 65535,
                   (random() * 4096)::BIGINT, 32768 | (random() * 16384)::BIGINT,
                   (random() * 281474976710655)::BIGINT)) AS id
            FROM (SELECT {ms0} + (i * {WIDTH * 1000} // {per}) AS ms FROM range({per}) t(i))
            """
        ).to_arrow_table()
        con.register("old_ids", ids)
        write_index_file(
            horizon.index_path(old),
            con.sql(f"SELECT p, h FROM ({keys_query('old_ids')}) ORDER BY p, h").to_arrow_table(),
        )
        index_bytes += horizon.index_path(old).stat().st_size
        files: list[ManifestFile] = []
        if k <= retry_from:
            info = write_parquet_atomic(layout.bucket_dir(old) / layout.part_name(0), ids)
            files.append(
                ManifestFile(name=info.name, bytes=info.bytes, rows=info.rows, sha256=info.sha256)
            )
            recent += ids.column("id").to_pylist()
        con.unregister("old_ids")
        write_manifest(
            layout.manifest_path(old),
            Manifest(
                event_type=old.event_type,
                bucket_start=iso_utc(old.start),
                bucket_end=iso_utc(old.end(WIDTH)),
                bucket_start_epoch=old.start,
                bucket_width_secs=WIDTH,
                events=per,
                input_events=per,
                duplicates_dropped=0,
                duplicates_dropped_previous_bucket=0,
                skewed_in=0,
                stream_seq_ranges=[],
                files=files,
                staging_files=[],
                schema_versions=[1],
                watermark=iso_utc(old.end(WIDTH)),
                closed_at=iso_utc(old.end(WIDTH)),
                close_delay_secs=0.0,
            ),
        )
    con.close()
    return recent, index_bytes


def build_bucket(
    root: Path,
    rows: int,
    files: int,
    duplicate_share: float,
    *,
    retries: list[str] | None = None,
    retry_share: float = 0.0,
    random_ids: bool = False,
) -> tuple[BucketKey, int, int]:
    """Staging files of one closed-able bucket; returns (key, input rows, distinct ids)."""
    compiled = compiled_example()
    layout = Layout(root, WIDTH)
    key = BucketKey("PlaySong", bucket_start(time.time(), WIDTH) - 2 * WIDTH)
    base = arrow_rows(compiled, min(rows, 50_000))
    ids = IdSource()
    per_file = max(1, rows // files)
    total = 0
    distinct: set[str] | None = set() if rows <= 200_000 else None
    distinct_count = 0
    seq = 0
    prev_ids: list[str] = []
    rng = np.random.default_rng(1)
    while total < rows:
        n = min(per_file, rows - total)
        reps = -(-n // base.num_rows)
        table = pa.concat_tables([base] * reps).slice(0, n)
        fresh = [uuid7() for _ in range(n)] if random_ids else ids.take(n)[0]
        new_ids = list(fresh)
        dups = int(n * duplicate_share) if prev_ids else 0
        if dups:
            where = rng.choice(n, size=dups, replace=False)
            pick = rng.choice(len(prev_ids), size=dups, replace=False)
            for w, p in zip(where, pick, strict=True):
                new_ids[w] = prev_ids[p]
        if retries and retry_share:
            # Copies of ids closed buckets already hold: never distinct, always dropped.
            # Their rows are other than the redelivered ones (each row counted once).
            k = int(n * retry_share)
            taken = set(where.tolist()) if dups else set()
            free = np.array([i for i in range(n) if i not in taken])
            where = rng.choice(free, size=k, replace=False)
            pick = rng.choice(len(retries), size=k, replace=False)
            for w, r in zip(where, pick, strict=True):
                new_ids[w] = retries[r]
            dups += k
        distinct_count += n - dups
        if distinct is not None:
            distinct.update(new_ids)
        table = table.set_column(0, "id", pa.array(new_ids, type=pa.string()))
        msgs = -(-n // 100)
        seqs = np.repeat(np.arange(seq + 1, seq + msgs + 1, dtype=np.uint64), 100)[:n]
        idx = np.tile(np.arange(100, dtype=np.uint32), msgs)[:n]
        table = table.append_column("_seq", pa.array(seqs)).append_column("_idx", pa.array(idx))
        path = layout.staging_file(key, "bench", seq + 1, seq + msgs)
        write_parquet_atomic(path, table)
        seq += msgs
        total += n
        prev_ids = new_ids
    if distinct is not None:
        distinct_count = len(distinct - set(retries or ()))
    return key, total, distinct_count


async def close_bucket(
    root: Path | str, key: BucketKey, scratch: Path | None = None
) -> tuple[float, float]:
    """Run the close protocol on ``key`` (a data dir or a store URL): (elapsed s, CPU s).

    The CPU is this process's (every thread: DuckDB's and the store's too) during the
    close alone, after the imports and the schema compile a running closer has done
    once at start."""
    compiled = compiled_example()
    layout = Layout(root, WIDTH)
    catalog = Catalog(MemoryKeyValue(), "bench-closer", 600.0)
    closer = BucketCloser(
        layout, catalog, load_settings().closer, lambda k, b: None, scratch_dir=scratch
    )
    started, cpu0 = time.perf_counter(), time.process_time()
    result = await closer.close(key, compiled, time.time())
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
    assert result is not None
    return elapsed, cpu


def _close_in_child(
    root: str, key: BucketKey, scratch: str | None = None
) -> tuple[float, float, float]:
    """Close ``key`` in this (child) process: (elapsed s, CPU s, peak RSS MiB)."""
    where = root if "://" in root else Path(root)
    elapsed, cpu = asyncio.run(close_bucket(where, key, Path(scratch) if scratch else None))
    return elapsed, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_closer(
    rows: int,
    *,
    files: int = 20,
    duplicate_share: float = 0.01,
    horizon_ids: int = 0,
    horizon_buckets: int = 168,
    horizon_retry_share: float = 0.01,
    retry_from_buckets: int = 6,
    random_ids: bool = False,
    table_commits: int = 0,
) -> dict[str, object]:
    """Build and close one bucket in a temp dir; the closer benchmark's summary."""
    with tempfile.TemporaryDirectory(prefix="courier-bench-closer-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        key = BucketKey("PlaySong", bucket_start(time.time(), WIDTH) - 2 * WIDTH)
        retries: list[str] = []
        index_bytes = 0
        if horizon_ids:
            retries, index_bytes = build_horizon(
                root, key, horizon_ids, horizon_buckets, retry_from_buckets
            )
        key, total, distinct = build_bucket(
            root,
            rows,
            files,
            duplicate_share,
            retries=retries,
            retry_share=horizon_retry_share if horizon_ids else 0.0,
            random_ids=random_ids,
        )
        build_secs = time.perf_counter() - t0
        staged_mb = sum(p.stat().st_size for p in (root / "_staging").rglob("*.parquet")) / 1e6
        # The close runs in a child of its own, so its CPU and peak RSS are the closer's
        # alone (not the build's).
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            elapsed, cpu, rss_mib = pool.apply(_close_in_child, (str(root), key))
        new_index = DedupHorizon(Layout(root, WIDTH), 1).index_path(key).stat().st_size
        table = BucketReader(root, WIDTH).read("PlaySong", key.start, key.start + 1, columns=["id"])
        out_rows = table.num_rows
        out_distinct = len(pc.unique(table.column("id"))) if out_rows else 0
        bucket_bytes = sum(
            p.stat().st_size for p in Layout(root, WIDTH).bucket_dir(key).glob("*.parquet")
        )
        bucket_mb = bucket_bytes / 1e6
        manifest = BucketReader(root, WIDTH).manifest("PlaySong", key.start)
        tables = (
            measure_table_commits(root, key, table_commits, width=WIDTH) if table_commits else {}
        )
    horizon_fields: dict[str, object] = {}
    if horizon_ids:
        horizon_fields = {
            "horizon_ids": horizon_ids,
            "horizon_buckets": horizon_buckets,
            "horizon_index_mb": round(index_bytes / 1e6, 1),
            "retries_dropped": manifest.duplicates_dropped_other_buckets
            + manifest.duplicates_dropped_previous_bucket
            if manifest
            else None,
        }
    return {
        "closer_rows_per_s": round(total / elapsed, 1),
        "closer_secs": round(elapsed, 3),
        "closer_cpu_secs": round(cpu, 3),
        "closer_core_s_per_m_rows": round(cpu / max(1, total) * 1e6, 3),
        "closer_peak_rss_mib": round(rss_mib, 1),
        **horizon_fields,
        "index_bytes_per_id": round(new_index / max(1, distinct), 2),
        "index_share_of_bucket_bytes": round(new_index / max(1, bucket_bytes), 3),
        "input_rows": total,
        "staging_files": files,
        "staging_mb": round(staged_mb, 1),
        "bucket_rows": out_rows,
        "bucket_mb": round(bucket_mb, 1),
        "duplicates_dropped": total - out_rows,
        "build_secs": round(build_secs, 3),
        "lost": distinct - out_distinct,
        "duplicated": out_rows - out_distinct,
        **tables,
    }


def measure_closer_on_store(
    rows: int, store: str, *, files: int = 20, duplicate_share: float = 0.01
) -> dict[str, object]:
    """Build a bucket's staging files, upload them to an emulator of ``store`` (``s3`` or
    ``gcs``, a real process), and time the close there (a child process, as above)."""
    import os

    from bench._emulators import FakeGcs, MotoS3

    with tempfile.TemporaryDirectory(prefix="courier-bench-closer-store-") as tmp:
        root = Path(tmp)
        emulator: MotoS3 | FakeGcs = (MotoS3 if store == "s3" else FakeGcs)(root / "emulator")
        with emulator:
            bucket = emulator.new_bucket()
            url = f"{'s3' if store == 's3' else 'gs'}://{bucket}/courier"
            saved = dict(os.environ)
            os.environ.update(emulator.env())  # the spawned closer inherits it
            try:
                key, total, distinct = build_bucket(root / "local", rows, files, duplicate_share)
                layout = Layout(url, WIDTH)
                local = Layout(root / "local", WIDTH)
                t0 = time.perf_counter()
                staged = local.list_staging(key)
                for o in staged:
                    layout.store.put_file(o.key, root / "local" / o.key)
                upload_secs = time.perf_counter() - t0
                staged_mb = sum(o.size_bytes for o in staged) / 1e6
                ctx = multiprocessing.get_context("spawn")
                with ctx.Pool(1) as pool:
                    elapsed, cpu, rss_mib = pool.apply(
                        _close_in_child, (url, key, str(root / "scratch"))
                    )
                table = BucketReader(url, WIDTH, scratch_dir=root / "read").read(
                    "PlaySong", key.start, key.start + 1, columns=["id"]
                )
            finally:
                os.environ.clear()
                os.environ.update(saved)
        out_rows = table.num_rows
        out_distinct = len(pc.unique(table.column("id"))) if out_rows else 0
    return {
        "store": store,
        "closer_rows_per_s": round(total / elapsed, 1),
        "closer_secs": round(elapsed, 3),
        "closer_cpu_secs": round(cpu, 3),
        "closer_peak_rss_mib": round(rss_mib, 1),
        "input_rows": total,
        "staging_files": files,
        "staging_mb": round(staged_mb, 1),
        "upload_secs": round(upload_secs, 3),
        "bucket_rows": out_rows,
        "lost": distinct - out_distinct,
        "duplicated": out_rows - out_distinct,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.closer", description=__doc__)
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--files", type=int, default=20)
    p.add_argument("--duplicate-share", type=float, default=0.01)
    p.add_argument("--horizon-ids", type=int, default=0, help="ids already in closed buckets")
    p.add_argument("--horizon-buckets", type=int, default=168)
    p.add_argument("--horizon-retry-share", type=float, default=0.01)
    p.add_argument("--retry-from-buckets", type=int, default=6)
    p.add_argument(
        "--random-ids",
        action="store_true",
        help="random UUIDv7 ids as the SDK makes them (default: the load generator's counter ids)",
    )
    p.add_argument(
        "--table-commits", type=int, default=0, help="then commit the bucket to its Iceberg table"
    )
    p.add_argument(
        "--store", choices=["local", "s3", "gcs"], default="local", help="where the bucket lives"
    )
    p.add_argument("--duration", type=float, help="ignored (the suite passes it to every bench)")
    args = p.parse_args(argv)
    if args.store != "local":
        emit(
            f"closer alone on {args.store}",
            measure_closer_on_store(
                args.rows, args.store, files=args.files, duplicate_share=args.duplicate_share
            ),
        )
        return
    emit(
        "closer alone",
        measure_closer(
            args.rows,
            files=args.files,
            duplicate_share=args.duplicate_share,
            horizon_ids=args.horizon_ids,
            horizon_buckets=args.horizon_buckets,
            horizon_retry_share=args.horizon_retry_share,
            retry_from_buckets=args.retry_from_buckets,
            random_ids=args.random_ids,
            table_commits=args.table_commits,
        ),
    )


if __name__ == "__main__":
    main()
