"""``python -m bench.faults SCENARIO... [--duration S] [--quick] [--repeat N] [--burners K]``.

Runs fault scenarios (``dc-*``: several DCs, see :mod:`bench.faults.dcscenarios`;
``dc-all`` runs those four). ``--repeat N`` runs each scenario N times in a row;
``--burners K`` runs K CPU burners (busy-looping processes, one per core is the
useful load: ``--burners 2`` here) beside them for the whole run, so a timing
assumption that only holds on an idle machine shows up. The loop the dedup-horizon
issue asked for is::

    python -m bench.faults gateway-kill writer-kill closer-steps nats-kill \
        --quick --repeat 10 --burners 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.faults.dcscenarios import DC_SCENARIOS, run_dc_scenario
from bench.faults.runner import run_scenario
from bench.faults.scenarios import SCENARIOS, Options

COLUMNS = (
    ("scenario", 16),
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


@contextmanager
def cpu_burners(count: int) -> Iterator[list[int]]:
    """``count`` busy-looping processes for the duration of the block; their PIDs."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def repeat_summary(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Per scenario: runs, runs that passed, and the lost/duplicated totals."""
    out: dict[str, dict[str, object]] = {}
    for r in rows:
        s = out.setdefault(
            str(r["scenario"]),
            {
                "scenario": r["scenario"],
                "runs": 0,
                "passed": 0,
                "lost": 0,
                "duplicated": 0,
                "acked": 0,
            },
        )
        s["runs"] = int(s["runs"]) + 1  # type: ignore[call-overload]
        s["passed"] = int(s["passed"]) + (r["ok"] is not False)  # type: ignore[call-overload]
        for k in ("lost", "duplicated", "acked"):
            s[k] = int(s[k]) + int(r.get(k) or 0)  # type: ignore[call-overload]
    return list(out.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    p.add_argument(
        "scenarios",
        nargs="+",
        choices=[*SCENARIOS, *DC_SCENARIOS, "all", "dc-all"],
        metavar="SCENARIO",
        help="a scenario, 'all' (one DC) or 'dc-all' (the several-DC ones)",
    )
    p.add_argument("--duration", type=float, help="seconds of load per scenario (default 45)")
    p.add_argument("--quick", action="store_true", help="a few seconds each, fewer faults")
    p.add_argument("--rate", type=float, default=5000.0, help="events/s offered (open loop)")
    p.add_argument("--workdir", type=Path, help="parent of the temp dirs (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep temp dirs (logs) for a post-mortem")
    p.add_argument("--repeat", type=int, default=1, help="run each scenario N times in a row")
    p.add_argument(
        "--burners",
        type=int,
        default=0,
        help=f"CPU burners beside the run (cores: {os.cpu_count()})",
    )
    args = p.parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C: the harness stops its processes and unmounts its tmpfs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    names = list(dict.fromkeys(args.scenarios))
    names = [n for x in names for n in (SCENARIOS if x == "all" else [x])]
    names = [n for x in names for n in (DC_SCENARIOS if x == "dc-all" else [x])]
    duration = args.duration or (6.0 if args.quick else 45.0)
    opts = Options(duration_secs=duration, quick=args.quick, rate_events_per_s=args.rate)
    rows = []
    with cpu_burners(args.burners):
        for name in names:
            for run in range(1, args.repeat + 1):
                label = f" run {run}/{args.repeat}" if args.repeat > 1 else ""
                print(f"== {name}{label} ({duration:.0f}s of load)", file=sys.stderr, flush=True)
                run_one = run_dc_scenario if name in DC_SCENARIOS else run_scenario
                row = run_one(name, opts, workdir=args.workdir, keep=args.keep)
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
    print(table(rows))
    ok = all(r["ok"] is not False for r in rows)
    summary: dict[str, object] = {"ok": ok, "scenarios": rows}
    if args.repeat > 1 or args.burners:
        summary["repeat"] = args.repeat
        summary["burners"] = args.burners
        summary["summary"] = repeat_summary(rows)
        for s in summary["summary"]:  # type: ignore[attr-defined]
            print(
                f"{s['scenario']}: {s['passed']}/{s['runs']} passed, {s['acked']} acked, "
                f"{s['lost']} lost, {s['duplicated']} duplicated"
            )
    print(json.dumps(summary, separators=(",", ":")))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
