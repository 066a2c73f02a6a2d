"""The fault suite, short: a few seconds of load per scenario, nothing lost, nothing doubled.

The full runs (minutes each) are ``python -m bench.faults all``; see README "Reliability".
No timing is asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: A stack per scenario, about 30 s each: left out of ``scripts/test -m "not slow"``.
pytestmark = pytest.mark.slow


def _run_quick(scenario: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.faults", scenario, "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-4000:]
    rows = json.loads(lines[-1])["scenarios"]
    assert len(rows) == 1
    return dict(rows[0])


@pytest.mark.timeout(180)
@pytest.mark.parametrize("scenario", ["gateway-kill", "writer-kill", "closer-steps", "nats-kill"])
def test_under_repeated_kill_9_no_acknowledged_event_is_lost_or_duplicated(scenario):
    row = _run_quick(scenario)
    assert row["acked"] and row["faults"], row
    assert row["lost"] == 0 and row["duplicated"] == 0 and row["unexpected"] == 0, row
    assert row["problems"] == [], row
