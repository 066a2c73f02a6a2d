"""Fuzz the gateway's HTTP API for a long run: hostile bodies, headers and schemathesis cases.

Runs the property-based tests of ``tests/gateway/test_gateway_fuzz.py`` with
many more examples than the test suite does (the suite keeps them short):

    .venv/bin/python -m bench.fuzz_gateway --examples 5000

Every case must get a 4xx naming the problem or a full 200 answer; a 5xx, a
crash or an event unaccounted for fails the run. Prints
the requests sent per property and, last, a JSON line with the totals.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = "tests/gateway/test_gateway_fuzz.py"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=2000, help="examples per property")
    p.add_argument("-k", default=None, help="only the properties matching this pytest -k")
    args = p.parse_args()
    report = Path(tempfile.mkdtemp(prefix="courier-fuzz-")) / "cases.json"
    env = {
        **os.environ,
        "COURIER_FUZZ_EXAMPLES": str(args.examples),
        "COURIER_FUZZ_REPORT": str(report),
    }
    cmd = [sys.executable, "-m", "pytest", TESTS, "-q", "-p", "no:cacheprovider"]
    cmd += ["--timeout", "0"]
    if args.k:
        cmd += ["-k", args.k]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    cases = json.loads(report.read_text()) if report.exists() else {}
    for name, n in sorted(cases.items()):
        print(f"{n:>8}  {name}")
    print(
        json.dumps(
            {
                "examples_per_property": args.examples,
                "cases_sent": sum(cases.values()),
                "seconds": round(time.monotonic() - started, 1),
                "passed": proc.returncode == 0,
            }
        )
    )
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
