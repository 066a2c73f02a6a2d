"""``python -m bench --duration 30``: the whole suite, one table, one JSON line.

Runs each benchmark as its own process (``bench.e2e``, ``bench.gateway``,
``bench.writer``, ``bench.closer``) so none inherits another's state, collects
their last-line JSON objects and prints them merged (keys prefixed by the
benchmark's name) as the final line. ``--only e2e,closer`` picks some.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from bench._report import emit

SUITE = ("e2e", "gateway", "writer", "closer")


def _args(name: str, duration: float, smoke: bool) -> list[str]:
    if name == "e2e":
        extra = ["--duration", str(duration)]
        if smoke:
            extra += ["--bucket-width-secs", "2", "--grace-secs", "1"]
            extra += ["--closer-rows", "20000", "--raw-duration", "1"]
        return extra
    if name == "gateway":
        return ["--duration", str(duration)]
    if name == "writer":
        events = 20_000 if smoke else 4_000_000
        return ["--duration", str(duration), "--events", str(events)]
    rows = 20_000 if smoke else max(200_000, int(duration * 100_000))
    return ["--rows", str(rows)]


def run_one(name: str, argv: list[str]) -> dict[str, object]:
    """Run ``python -m bench.<name> ARGV``, echo its output, return its last-line JSON."""
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *argv], capture_output=True, text=True
    )
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-5000:])
        raise SystemExit(f"bench.{name} failed with exit code {proc.returncode}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load per benchmark")
    p.add_argument("--only", help=f"comma-separated subset of {','.join(SUITE)}")
    p.add_argument("--smoke", action="store_true", help="tiny volumes (the test suite's run)")
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else list(SUITE)
    merged: dict[str, object] = {}
    for name in names:
        if name not in SUITE:
            raise SystemExit(f"unknown benchmark {name!r}; choose from {', '.join(SUITE)}")
        result = run_one(name, _args(name, args.duration, args.smoke))
        if name == "e2e":
            merged.update(result)
        else:
            merged.update({f"{name}.{k}": v for k, v in result.items()})
    lost = [v for k, v in merged.items() if k.split(".")[-1] == "lost" and v]
    dup = [v for k, v in merged.items() if k.split(".")[-1] == "duplicated" and v]
    merged["lost"] = int(sum(lost))  # type: ignore[arg-type]
    merged["duplicated"] = int(sum(dup))  # type: ignore[arg-type]
    emit("suite", merged)


if __name__ == "__main__":
    main()
