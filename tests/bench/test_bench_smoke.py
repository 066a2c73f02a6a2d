"""The benchmark scripts keep working: a few seconds of each, tiny volumes, no timing asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Whole stacks and benches in subprocesses: left out of ``scripts/test -m "not slow"``.
pytestmark = pytest.mark.slow


def _last_json(*argv: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.timeout(120)
def test_the_end_to_end_bench_delivers_every_acked_event_exactly_once():
    out = _last_json(
        "bench.e2e",
        *("--duration", "2", "--bucket-width-secs", "2", "--grace-secs", "1"),
        *("--closer-rows", "5000", "--raw-duration", "1", "--concurrency", "8"),
    )
    assert out["lost"] == 0 and out["duplicated"] == 0 and out["unexpected"] == 0
    assert out["acked_events"] and out["e2e_events_per_s"] and out["raw_jetstream_events_per_s"]
    # The closer's cost split: per row (a large close) and per bucket (a small one).
    assert float(out["closer_fixed_cpu_s_per_bucket"]) > 0  # type: ignore[arg-type]
    assert float(out["closer_hourly_core_s_per_m"]) >= float(out["closer_alone_core_s_per_m_rows"])  # type: ignore[arg-type]


#: One component at a time (nats-server and a gateway, or a writer), no whole stack: these
#: run beside the whole-stack tests in a parallel run (tests/conftest.py).
@pytest.mark.xdist_group("component-benches")
@pytest.mark.timeout(120)
def test_the_component_benches_run_and_lose_nothing():
    gateway = _last_json("bench.gateway", "--duration", "2", "--concurrency", "8")
    writer = _last_json("bench.writer", "--duration", "2", "--events", "20000")
    closer = _last_json("bench.closer", "--rows", "20000")
    for out in (gateway, writer, closer):
        assert out["lost"] == 0 and out["duplicated"] == 0


@pytest.mark.xdist_group("component-benches")
@pytest.mark.timeout(120)
def test_the_in_process_gateway_cpu_bench_runs():
    out = _last_json("bench.gateway_cpu", "--requests", "20", "--rounds", "1")
    for key in ("post", "ingest", "validate", "encode"):
        assert float(out[f"{key}_us_per_request"]) > 0  # type: ignore[arg-type]
    for in_flight in (1, 4):
        assert float(out[f"publish_us_per_message_{in_flight}_in_flight"]) > 0  # type: ignore[arg-type]


@pytest.mark.xdist_group("component-benches")
@pytest.mark.timeout(120)
def test_the_auditor_bench_reads_a_closed_bucket_right():
    out = _last_json(
        "bench.auditor",
        *("--rows", "20000", "--rounds", "2", "--rechecks", "2"),
        # 5,000 messages: the count's CPU spans several 10 ms /proc ticks, so a
        # figure of 0.0 means it was not measured, not that counting was too quick.
        *("--count-events", "50000", "--events-per-message", "10"),
    )
    assert out["rows"] == out["distinct_ids"] and out["rows"]
    # Counted from the watcher's first sight of a fetch: a batch counted before it
    # is left out of both the events and the CPU.
    assert 0 < out["counted_events"] <= out["count_events"]  # type: ignore[operator]
    assert float(out["audit_count_core_s_per_m_events"]) > 0  # type: ignore[arg-type]
    assert float(out["audit_check_core_s_per_m_rows"]) > 0  # type: ignore[arg-type]
