"""Several DCs, short: two DCs and the delivery region, a link cut past central's duplicate
window and a producer failing over between DCs; nothing lost, nothing doubled.

The full runs are ``python -m bench.faults dc-all``; see README "Several data centres".
No timing is asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Three nats-servers and five services per scenario, about 25 s each.
pytestmark = pytest.mark.slow


def _run_quick(scenario: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.faults", scenario, "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=230,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-4000:]
    rows = json.loads(lines[-1])["scenarios"]
    assert len(rows) == 1
    return dict(rows[0])


@pytest.mark.timeout(240)
@pytest.mark.parametrize("scenario", ["dc-link-cut", "dc-failover"])
def test_across_dcs_no_acknowledged_event_is_lost_or_duplicated(scenario):
    row = _run_quick(scenario)
    assert row["acked"] and row["faults"], row
    assert row["lost"] == 0 and row["duplicated"] == 0 and row["unexpected"] == 0, row
    assert row["problems"] == [], row
    # Every DC sequence reached the delivery region exactly once.
    sequences = row["notes"]["dc_sequences"]  # type: ignore[index]
    assert sequences and all(c["missing"] == 0 and c["repeated"] == 0 for c in sequences.values())
