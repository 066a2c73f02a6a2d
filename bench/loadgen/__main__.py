"""``python -m bench.loadgen run|verify``: the load generator and the verifier as commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.loadgen.driver import LoadConfig, run_load
from bench.loadgen.verify import verify


def _run(args: argparse.Namespace) -> int:
    cfg = LoadConfig(
        url=args.url,
        duration_secs=args.duration,
        rate_events_per_s=args.rate,
        batch_events=args.batch_events,
        event_bytes=args.event_bytes,
        types=args.types,
        skew=args.skew,
        concurrency=args.concurrency,
        processes=args.processes,
        duplicate_rate=args.duplicate_rate,
        ledger_dir=args.ledger,
        fsync_every_batch=args.fsync_every_batch,
        max_events=args.max_events,
    )
    result = run_load(cfg)
    summary = result.summary()
    for k, v in summary.items():
        print(f"{k:<22} {v}")
    print(json.dumps(summary, separators=(",", ":")))
    return 0 if result.acked_events and not result.rejected_events else 1


def _verify(args: argparse.Namespace) -> int:
    report = verify(
        args.ledger,
        args.data_dir,
        bucket_width_secs=args.bucket_width_secs,
        event_types=args.type or None,
    )
    print(report.table())
    print(json.dumps(report.to_dict(), separators=(",", ":")))
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="post events to a gateway and keep a ledger of acked ids")
    r.add_argument("--url", default="http://127.0.0.1:8080", help="gateway base URL")
    r.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    r.add_argument("--rate", type=float, help="open loop: events/s over all processes")
    r.add_argument("--batch-events", type=int, default=100)
    r.add_argument(
        "--event-bytes", type=int, default=360, help="approximate JSON size of one event"
    )
    r.add_argument("--types", type=int, default=3, help="number of event types (>3 needs clones)")
    r.add_argument("--skew", type=float, default=0.0, help="zipf exponent of the type mix")
    r.add_argument("--concurrency", type=int, default=32, help="requests in flight, all processes")
    r.add_argument("--processes", type=int, default=1)
    r.add_argument("--duplicate-rate", type=float, default=0.0, help="share of batches re-sent")
    r.add_argument("--ledger", type=Path, help="ledger directory (default: none)")
    r.add_argument("--fsync-every-batch", action="store_true")
    r.add_argument("--max-events", type=int, help="stop after this many acked events")
    r.set_defaults(func=_run)
    v = sub.add_parser(
        "verify", help="check closed buckets against a ledger; non-zero on a problem"
    )
    v.add_argument("--ledger", type=Path, required=True)
    v.add_argument("--data-dir", type=Path, required=True)
    v.add_argument("--bucket-width-secs", type=int, help="default: read from a manifest")
    v.add_argument("--type", action="append", help="only these event types (repeatable)")
    v.set_defaults(func=_verify)
    args = p.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
