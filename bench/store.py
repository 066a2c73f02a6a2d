"""The bucket stores alone: latency of the close protocol's operations, and bulk throughput.

For each backend (local directory, S3 on a moto_server process, GCS on a
fake-gcs-server process) it times, through :class:`courier.storage.store.BucketStore`:

- ``create``: create-only put of a 2 KB manifest (``_SUCCESS``), median ms;
- ``replace``: compare-and-swap of that manifest, median ms;
- ``put_small``: a 64 KB staging file, median ms;
- ``list``: listing ``--objects`` staging objects, median ms;
- ``put_file``/``local_file``: upload and download of a ``--big-mib`` file, MB/s.

Emulators run on this machine, so the figures bound the client's cost, not a
cloud's latency. ``python -m bench.store --rounds 50 --big-mib 55``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench._emulators import FakeGcs, MotoS3
from bench._report import emit
from courier.storage.store import BucketStore, LocalStore


def _median_ms(fn: Callable[[int], object], rounds: int) -> float:
    times = []
    for i in range(rounds):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def measure(
    store: BucketStore, scratch: Path, rounds: int, objects: int, big_mib: int
) -> dict[str, float]:
    manifest = os.urandom(2048)
    small = os.urandom(64 * 1024)
    out: dict[str, float] = {}
    out["create_ms"] = _median_ms(lambda i: store.create(f"T/h={i}/_SUCCESS", manifest), rounds)
    versions = {i: store.get_versioned(f"T/h={i}/_SUCCESS").version for i in range(rounds)}
    out["replace_ms"] = _median_ms(
        lambda i: store.replace(f"T/h={i}/_SUCCESS", manifest[::-1], version=versions[i]), rounds
    )
    out["put_small_ms"] = _median_ms(
        lambda i: store.put(f"_staging/T/w-{i}.parquet", small), rounds
    )
    for i in range(objects):
        store.put(f"_staging/L/w-{i:05d}.parquet", b"x")
    out["list_ms"] = _median_ms(lambda i: store.list_objects("_staging/L"), max(3, rounds // 10))
    big = scratch / "big.parquet"
    big.write_bytes(os.urandom(big_mib * 1024 * 1024))
    t0 = time.perf_counter()
    store.put_file("T/h=0/part-00000.parquet", big)
    out["put_file_mb_s"] = big_mib * 1.048576 / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    with store.local_file("T/h=0/part-00000.parquet", scratch / "dl") as path:
        size = path.stat().st_size
    out["local_file_mb_s"] = size / 1e6 / (time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--objects", type=int, default=1000, help="objects in the listed directory")
    p.add_argument("--big-mib", type=int, default=55)
    p.add_argument("--only", default="local,s3,gcs")
    args = p.parse_args(argv)
    summary: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        work = Path(tmp)
        for backend in args.only.split(","):
            scratch = work / f"scratch-{backend}"
            scratch.mkdir()
            if backend == "local":
                result = measure(
                    LocalStore(work / "root"), scratch, args.rounds, args.objects, args.big_mib
                )
            elif backend == "s3":
                from courier.storage.store.s3 import S3BucketStore

                with MotoS3(work / "moto") as moto:
                    store = S3BucketStore(moto.new_bucket(), "bench", **moto.store_config())
                    result = measure(store, scratch, args.rounds, args.objects, args.big_mib)
            elif backend == "gcs":
                from courier.storage.store.gcs import GcsBucketStore

                with FakeGcs(work / "gcs") as gcs:
                    store = GcsBucketStore(gcs.new_bucket(), "bench", client=gcs.client())
                    result = measure(store, scratch, args.rounds, args.objects, args.big_mib)
            else:
                raise SystemExit(f"unknown backend {backend!r}; choose from local,s3,gcs")
            summary.update({f"{backend}_{k}": round(v, 2) for k, v in result.items()})
    emit("bucket store operations", summary)


if __name__ == "__main__":
    main()
