"""The closer alone: dedup + compaction of one large bucket built from staging files.

Builds ``--rows`` rows of PlaySong (≈360-byte events) in ``--files`` staging
files, a share of them duplicates of rows in earlier files (redeliveries),
then times :class:`courier.closer.BucketCloser` closing the bucket: read the
staging files, order, drop duplicate ids, write zstd Parquet parts, manifest,
delete staging. rows/s = input rows / elapsed. ``lost``/``duplicated`` compare
the bucket with the distinct ids that went in.

``python -m bench.closer --rows 2000000``
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bench._data import arrow_rows, compiled_example
from bench._report import emit
from bench.loadgen.events import IdSource
from courier.closer import BucketCloser, Catalog
from courier.model import BucketKey, bucket_start
from courier.settings import CloserSettings
from courier.storage import BucketReader, Layout, write_parquet_atomic
from courier.transport import MemoryKeyValue

WIDTH = 3600


def build_bucket(
    root: Path, rows: int, files: int, duplicate_share: float
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
        fresh, _ = ids.take(n)
        new_ids = list(fresh)
        dups = int(n * duplicate_share) if prev_ids else 0
        if dups:
            where = rng.choice(n, size=dups, replace=False)
            pick = rng.choice(len(prev_ids), size=dups, replace=False)
            for w, p in zip(where, pick, strict=True):
                new_ids[w] = prev_ids[p]
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
        distinct_count = len(distinct)
    return key, total, distinct_count


async def close_bucket(root: Path, key: BucketKey) -> float:
    """Run the close protocol on ``key``; returns elapsed seconds."""
    compiled = compiled_example()
    layout = Layout(root, WIDTH)
    catalog = Catalog(MemoryKeyValue(), "bench-closer", 600.0)
    closer = BucketCloser(layout, catalog, CloserSettings(), lambda k, b: None)
    started = time.perf_counter()
    result = await closer.close(key, compiled, time.time())
    elapsed = time.perf_counter() - started
    assert result is not None
    return elapsed


def measure_closer(
    rows: int, *, files: int = 20, duplicate_share: float = 0.01
) -> dict[str, object]:
    """Build and close one bucket in a temp dir; the closer benchmark's summary."""
    with tempfile.TemporaryDirectory(prefix="courier-bench-closer-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        key, total, distinct = build_bucket(root, rows, files, duplicate_share)
        build_secs = time.perf_counter() - t0
        staged_mb = sum(p.stat().st_size for p in root.rglob("*.parquet")) / 1e6
        elapsed = asyncio.run(close_bucket(root, key))
        table = BucketReader(root, WIDTH).read("PlaySong", key.start, key.start + 1, columns=["id"])
        out_rows = table.num_rows
        out_distinct = len(pc.unique(table.column("id"))) if out_rows else 0
        bucket_mb = sum(p.stat().st_size for p in root.glob("PlaySong/**/*.parquet")) / 1e6
    return {
        "closer_rows_per_s": round(total / elapsed, 1),
        "closer_secs": round(elapsed, 3),
        "input_rows": total,
        "staging_files": files,
        "staging_mb": round(staged_mb, 1),
        "bucket_rows": out_rows,
        "bucket_mb": round(bucket_mb, 1),
        "duplicates_dropped": total - out_rows,
        "build_secs": round(build_secs, 3),
        "lost": distinct - out_distinct,
        "duplicated": out_rows - out_distinct,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.closer", description=__doc__)
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--files", type=int, default=20)
    p.add_argument("--duplicate-share", type=float, default=0.01)
    p.add_argument("--duration", type=float, help="ignored (the suite passes it to every bench)")
    args = p.parse_args(argv)
    emit(
        "closer alone",
        measure_closer(args.rows, files=args.files, duplicate_share=args.duplicate_share),
    )


if __name__ == "__main__":
    main()
