"""The auditor alone: counting a pre-filled stream, and checking a closed bucket.

**Counting** (``--count-events``, 0 = skip): an embedded NATS (``sync_interval:
always``) with PlaySong provisioned, its stream filled with gateway-style messages
(``--events-per-message`` events, the ``Courier-Events`` header set), then ``courier
auditor`` as a child process; its CPU (``/proc``, threads and children) from its first
fetch until the ``audit`` consumer's ack floor reaches the last message, per million
events (``audit_count_core_s_per_m_events``). That includes what the auditor does
meanwhile besides counting (its checks every ``audit.check_interval_secs``, its
``/metrics``), so short runs weigh those more. ``counted_events`` must equal the
events published.

**Checking.** The auditor reads every closed bucket once (the ``id`` column of each part, its row
count and its distinct ids: loss and duplicates in the bucket) and then, on every
check (``audit.check_interval_secs``), reads the manifest again and lists the parts
(a part deleted later is found). This bench closes a bucket of ``--rows`` rows (built
as ``bench.closer`` builds it) and measures, in CPU of this process (every thread):

- ``audit_check_core_s_per_m_rows``: the first check of the bucket (read + distinct),
  per million delivered rows, median of ``--rounds`` fresh scanners;
- ``audit_recheck_cpu_ms_per_bucket``: a later check of the same bucket (the cached
  result: manifest, listing, sizes), per bucket and check.

``python -m bench.auditor --rows 1000000 --count-events 2000000``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench._cpu import cpu_between, cpu_snapshot
from bench._nats import bench_settings, provision, watch_consumer
from bench._report import emit
from bench._stack import component_process
from bench.closer import build_bucket, close_bucket
from bench.writer import TYPE, fill
from courier.audit.report import DeliveredScanner
from courier.audit.store import AuditStore, StreamCounts
from courier.storage import Layout
from courier.transport import AUDIT_CONSUMER, AUDIT_KV, EmbeddedNats, Transport

WIDTH = 3600


def _cpu() -> float:
    return time.process_time()


def _events(stored: tuple[StreamCounts, int | None]) -> int:
    return sum(row[1] for row in stored[0].buckets.values())


async def _wait_counted(
    nats_url: str, last_seq: int, timeout_secs: float, proc: subprocess.Popen[bytes]
) -> tuple[float, int]:
    """(core-s of the auditor from its first fetch to its last ack, events counted meanwhile)."""
    transport = await Transport.connect(nats_url)
    store = AuditStore(await transport.key_value(AUDIT_KV))
    cpu_start: dict[str, float] = {}
    counted_before = counted = 0
    core = 0.0
    try:
        async for phase, _, _ in watch_consumer(
            transport, TYPE, AUDIT_CONSUMER, last_seq, timeout_secs, proc
        ):
            if phase == "started":
                cpu_start = cpu_snapshot(proc.pid)
                counted_before = _events(await store.stream_counts(TYPE))
            else:
                core = sum(cpu_between(cpu_start, cpu_snapshot(proc.pid)).values())
                counted = _events(await store.stream_counts(TYPE))
    finally:
        await transport.close()
    return core, counted - counted_before


def count(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="courier-bench-auditor-") as tmp:
        root = Path(tmp)
        with EmbeddedNats(root / "nats", port=0) as server:
            settings = bench_settings(root, server.url)
            asyncio.run(provision(settings, root, 1))
            events, last_seq, _ = asyncio.run(
                fill(server.url, args.count_events, 600, args.events_per_message, 360)
            )
            with component_process("auditor", settings, root / "auditor.log") as proc:
                core, counted = asyncio.run(_wait_counted(server.url, last_seq, 600, proc))
    return {
        "count_events": events,
        "count_messages": last_seq,
        "counted_events": counted,
        "audit_count_core_s_per_m_events": round(core / counted * 1e6, 3) if counted else None,
    }


def check(args: argparse.Namespace) -> dict[str, object]:
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
    p.add_argument("--count-events", type=int, default=1_000_000, help="0: no counting run")
    p.add_argument("--events-per-message", type=int, default=100)
    args = p.parse_args(argv)
    out = count(args) if args.count_events else {}
    emit("auditor: counting a stream, checking a closed bucket", {**out, **check(args)})


if __name__ == "__main__":
    main()
