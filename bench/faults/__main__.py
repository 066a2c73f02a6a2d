"""``python -m bench.faults SCENARIO... [--duration S] [--quick]``: run fault scenarios."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from bench.faults.runner import run_scenario
from bench.faults.scenarios import SCENARIOS, Options

COLUMNS = (
    ("scenario", 15),
    ("ok", 5),
    ("acked", 8),
    ("delivered", 9),
    ("lost", 5),
    ("duplicated", 10),
    ("faults", 6),
    ("recovery_max_secs", 17),
    ("http_503", 8),
    ("http_429", 8),
    ("conn_errors", 11),
    ("skewed", 6),
    ("duplicates_removed", 18),
)


def table(rows: list[dict[str, object]]) -> str:
    lines = [" ".join(f"{name:>{w}}" for name, w in COLUMNS)]
    for r in rows:
        lines.append(" ".join(f"{r.get(name, '')!s:>{w}}" for name, w in COLUMNS))
        for p in r.get("problems") or []:  # type: ignore[attr-defined]
            lines.append(f"    problem: {p}")
        if r.get("skipped"):
            lines.append(f"    skipped: {r['skipped']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    p.add_argument("scenarios", nargs="+", choices=[*SCENARIOS, "all"], metavar="SCENARIO")
    p.add_argument("--duration", type=float, help="seconds of load per scenario (default 45)")
    p.add_argument("--quick", action="store_true", help="a few seconds each, fewer faults")
    p.add_argument("--rate", type=float, default=5000.0, help="events/s offered (open loop)")
    p.add_argument("--workdir", type=Path, help="parent of the temp dirs (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep temp dirs (logs) for a post-mortem")
    args = p.parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C: the harness stops its processes and unmounts its tmpfs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    names = list(SCENARIOS) if "all" in args.scenarios else list(dict.fromkeys(args.scenarios))
    duration = args.duration or (6.0 if args.quick else 45.0)
    opts = Options(duration_secs=duration, quick=args.quick, rate_events_per_s=args.rate)
    rows = []
    for name in names:
        print(f"== {name} ({duration:.0f}s of load)", file=sys.stderr, flush=True)
        row = run_scenario(name, opts, workdir=args.workdir, keep=args.keep)
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    print(table(rows))
    ok = all(r["ok"] is not False for r in rows)
    print(json.dumps({"ok": ok, "scenarios": rows}, separators=(",", ":")))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
