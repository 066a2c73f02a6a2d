"""End to end: HTTP in → closed, verified buckets out, against the raw JetStream ceiling.

One run:

1. ``courier up`` on free ports with a temp data dir (embedded NATS with
   ``sync_interval: always``; gateway, writer, closer as child processes),
   short buckets, the load generator's types registered;
2. the raw JetStream ceiling on that same server (``bench.jetstream``), before
   any load, as the reference;
3. the load generator for ``--duration`` (closed loop unless ``--rate``), with
   a ledger of every acknowledged id; peak RSS of every process sampled;
4. wait until every bucket up to the last ack is closed; the CPU each
   component used from the start of the load until then (``bench._cpu``:
   ``/proc``, children included, this run's processes only) per million
   acknowledged events, also for the load alone (``cpu_load_*``); the gateway's own
   latency breakdown over the load (``bench._latency``: ``gw_<step>_p50_ms``/``_p99_ms``);
   stop the stack;
5. verify the closed buckets against the ledger (lost, duplicated, unexpected);
6. close delay per bucket from the manifests; the closer alone on a bucket of
   ``--closer-rows`` rows (``bench.closer``) for its rows/s and CPU per row, and on a
   1,000-row bucket (with its table commits) for the cost of a close that does not grow
   with its rows. This run's short buckets pay that cost every few seconds per type;
   ``closer_hourly_core_s_per_m`` projects the closer's CPU per million events with
   hourly buckets at this run's rate: per-row cost + fixed cost per type-hour.

``python -m bench.e2e --duration 30``
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench._cpu import (
    LOADGEN,
    NATS,
    STACK_COMPONENTS,
    SUPERVISOR,
    cpu_between,
    cpu_snapshot,
    per_million,
)
from bench._latency import breakdown, scrape
from bench._report import emit, percentile
from bench._stack import Stack
from bench.closer import measure_closer
from bench.jetstream import raw_ceiling
from bench.loadgen import LoadConfig, run_load, verify
from courier.model import bucket_start
from courier.storage import BucketReader, Layout, read_manifest

#: What the total CPU per million events covers: the stack, not the load generator.
_CPU_COMPONENTS = (*STACK_COMPONENTS, NATS, SUPERVISOR)


def _close_delays(stack: Stack, since: float) -> list[float]:
    layout = Layout(stack.data_dir, stack.width)
    delays = []
    for t in layout.event_types():
        for s in layout.closed_bucket_starts(t):
            if s + stack.width < since:
                continue
            m = read_manifest(layout.manifest_path(_key(t, s)))
            delays.append(float(m.close_delay_secs))
    return delays


def _key(t: str, s: int):  # type: ignore[no-untyped-def]
    from courier.model import BucketKey

    return BucketKey(t, s)


def _wait_all_closed(stack: Stack, names: list[str], until: float, timeout_secs: float) -> bool:
    reader = BucketReader(stack.data_dir, stack.width)
    deadline = time.monotonic() + timeout_secs
    for name in names:
        try:
            reader.wait_closed(name, until, max(0.1, deadline - time.monotonic()))
        except Exception:
            return False
    return True


def run(args: argparse.Namespace) -> dict[str, object]:
    stack = Stack(
        bucket_width_secs=args.bucket_width_secs, grace_secs=args.grace_secs, types=args.types
    )
    try:
        stack.start()
        raw = asyncio.run(
            raw_ceiling(
                stack.nats_url,
                duration_secs=args.raw_duration or min(10.0, max(2.0, args.duration / 3)),
                events_per_message=args.batch_events,
                event_bytes=args.event_bytes,
            )
        )
        metrics_before = scrape(stack.url)
        load_start = time.time()
        cpu_start = cpu_snapshot()
        result = run_load(
            LoadConfig(
                url=stack.url,
                duration_secs=args.duration,
                rate_events_per_s=args.rate,
                batch_events=args.batch_events,
                event_bytes=args.event_bytes,
                types=args.types,
                skew=args.skew,
                concurrency=args.concurrency,
                processes=args.processes,
                duplicate_rate=args.duplicate_rate,
                ledger_dir=stack.ledger_dir,
            )
        )
        last_ack = time.time()
        cpu_load = cpu_between(cpu_start, cpu_snapshot())
        latency = breakdown(metrics_before, scrape(stack.url))
        names = sorted(result.events_by_type) or ["PlaySong"]
        closed_in_time = _wait_all_closed(
            stack, names, last_ack, stack.width + stack.grace_secs + args.close_timeout
        )
        drain_secs = time.time() - last_ack
        cpu = cpu_between(cpu_start, cpu_snapshot())
        cpu_window_secs = time.time() - load_start
        assert stack.sampler is not None
        stack.sampler.sample()
        rss = dict(stack.sampler.peak_mib)
        stack.stop()
        report = verify(stack.ledger_dir, stack.data_dir, bucket_width_secs=stack.width)
        delays = _close_delays(stack, bucket_start(load_start, stack.width))
    finally:
        stack.stop()
        stack.cleanup()
    closer = measure_closer(args.closer_rows)
    # A close's cost that does not grow with its rows (claims, queries, index lookups, the
    # manifest): this run closes a bucket per type every few seconds, production one an hour.
    small_close = measure_closer(1_000, files=4, table_commits=3)
    e2e = result.events_per_s
    raw_eps = float(raw["raw_jetstream_events_per_s"])
    stack_cpu = per_million(cpu, result.acked_events, _CPU_COMPONENTS)
    loadgen_cpu = per_million(cpu, result.acked_events, (LOADGEN,))
    # The same during the load alone: a short run's drain adds every component's idle
    # polling (and the closer's last closes) to few events.
    load_only = {
        k.replace("cpu_", "cpu_load_", 1): v
        for k, v in per_million(cpu_load, result.acked_events, _CPU_COMPONENTS).items()
    }
    return {
        "e2e_events_per_s": round(e2e, 1),
        "raw_jetstream_events_per_s": raw_eps,
        "ratio_to_raw": round(e2e / raw_eps, 3) if raw_eps else None,
        "gateway_p50_ms": round(result.percentile_ms(50), 3),
        "gateway_p99_ms": round(result.percentile_ms(99), 3),
        **latency,
        "close_delay_p99_s": round(percentile(delays, 99), 3),
        "close_delay_max_s": round(max(delays), 3) if delays else None,
        "closer_rows_per_s": closer["closer_rows_per_s"],
        "closer_alone_core_s_per_m_rows": closer["closer_core_s_per_m_rows"],
        "closer_fixed_cpu_s_per_bucket": small_close["closer_cpu_secs"],
        "table_commit_cpu_s_per_bucket": small_close["table_commit_cpu_p50_secs"],
        "closer_hourly_core_s_per_m": _closer_hourly(closer, small_close, args.types, e2e),
        **stack_cpu,
        "cpu_loadgen_core_s_per_m": loadgen_cpu[f"cpu_{LOADGEN}_core_s_per_m"],
        "cpu_window_secs": round(cpu_window_secs, 1),
        **load_only,
        "gateway_rss_mib": round(rss.get("gateway", 0.0), 1),
        "writer_rss_mib": round(rss.get("writer", 0.0), 1),
        "closer_rss_mib": round(rss.get("closer", 0.0), 1),
        "nats_rss_mib": round(rss.get("nats", 0.0), 1),
        "lost": report.missing,
        "duplicated": report.duplicated,
        "unexpected": report.unexpected,
        "acked_events": result.acked_events,
        "delivered_rows": report.delivered_rows,
        "duplicate_events_sent": result.duplicate_events_sent,
        "rejected_events": result.rejected_events,
        "unknown_events": result.unknown_events,
        "http_errors": sum(result.errors.values()),
        "load_secs": round(result.elapsed_secs, 2),
        "drain_secs": round(drain_secs, 2),
        "all_closed_in_time": closed_in_time,
        "closed_buckets": report.closed_buckets,
        "open_buckets": report.open_buckets,
        "raw_messages_per_s": raw["raw_messages_per_s"],
        "raw_publish_p99_ms": raw["raw_publish_p99_ms"],
        "bucket_width_secs": stack.width,
        "grace_secs": stack.grace_secs,
        "concurrency": args.concurrency,
        "processes": args.processes,
        "types": args.types,
    }


def _closer_hourly(
    large: dict[str, object], small: dict[str, object], types: int, events_per_s: float
) -> float | None:
    """The closer's core-s per million events with hourly buckets of ``types`` types at
    ``events_per_s``: the large close's CPU per row plus, per type and hour, one close's
    fixed CPU and one table commit."""
    if events_per_s <= 0:
        return None
    per_row = _number(large, "closer_core_s_per_m_rows")
    fixed = _number(small, "closer_cpu_secs") + _number(small, "table_commit_cpu_p50_secs")
    return round(per_row + fixed * types / (3600 * events_per_s) * 1e6, 3)


def _number(summary: dict[str, object], key: str) -> float:
    value = summary[key]
    assert isinstance(value, int | float), (key, value)
    return float(value)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__)
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    p.add_argument("--rate", type=float, help="open loop at this many events/s (default: max)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--processes", type=int, default=1, help="load generator processes")
    p.add_argument("--types", type=int, default=3)
    p.add_argument("--skew", type=float, default=1.0)
    p.add_argument("--batch-events", type=int, default=100)
    p.add_argument("--event-bytes", type=int, default=360)
    p.add_argument("--duplicate-rate", type=float, default=0.01)
    p.add_argument("--bucket-width-secs", type=int, default=10)
    p.add_argument("--grace-secs", type=int, default=10)
    p.add_argument("--raw-duration", type=float, help="seconds of the raw ceiling run")
    p.add_argument("--close-timeout", type=float, default=120.0)
    p.add_argument("--closer-rows", type=int, default=1_000_000)
    return p


def main(argv: list[str] | None = None) -> None:
    emit("end to end", run(parser().parse_args(argv)))


if __name__ == "__main__":
    main()
