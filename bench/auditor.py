"""The auditor's check of a closed bucket: what it costs per delivered row and per check.

The auditor reads every closed bucket once (the ``id`` column of each part, its row
count and its distinct ids: loss and duplicates in the bucket) and then, on every
check (``audit.check_interval_secs``), reads the manifest again and lists the parts
(a part deleted later is found). This bench closes a bucket of ``--rows`` rows (built
as ``bench.closer`` builds it) and measures, in CPU of this process (every thread):

- ``audit_check_core_s_per_m_rows``: the first check of the bucket (read + distinct),
  per million delivered rows, median of ``--rounds`` fresh scanners;
- ``audit_recheck_cpu_ms_per_bucket``: a later check of the same bucket (the cached
  result: manifest, listing, sizes), per bucket and check.

``python -m bench.auditor --rows 1000000``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench._report import emit
from bench.closer import build_bucket, close_bucket
from courier.audit.report import DeliveredScanner
from courier.storage import Layout

WIDTH = 3600


def _cpu() -> float:
    return time.process_time()


def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="courier-bench-auditor-") as tmp:
        root = Path(tmp)
        key, _, distinct = build_bucket(root / "data", args.rows, args.files, 0.01)
        asyncio.run(close_bucket(root / "data", key, root / "scratch"))
        layout = Layout(root / "data", WIDTH)
        first: list[float] = []
        again: list[float] = []
        for _ in range(args.rounds):
            scanner = DeliveredScanner(layout, scratch_dir=root / "audit-scratch")
            c0 = _cpu()
            got = scanner.check(key)
            first.append(_cpu() - c0)
            if got is None or got.error or got.distinct_ids != distinct or got.missing_files:
                raise SystemExit(f"the check read the bucket wrong: {got}")
            c0 = _cpu()
            for _ in range(args.rechecks):
                scanner.check(key)
            again.append((_cpu() - c0) / args.rechecks)
        rows = got.rows_found if got is not None else 0
    return {
        "rows": rows,
        "distinct_ids": distinct,
        "rounds": args.rounds,
        "audit_check_core_s_per_m_rows": round(statistics.median(first) / rows * 1e6, 3),
        "audit_check_cpu_s_runs": [round(x, 3) for x in first],
        "audit_recheck_cpu_ms_per_bucket": round(statistics.median(again) * 1e3, 3),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.auditor", description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--files", type=int, default=20, help="staging files of the bucket")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--rechecks", type=int, default=50, help="later checks per round")
    emit("auditor: checking a closed bucket", run(p.parse_args(argv)))


if __name__ == "__main__":
    main()
