"""The /proc CPU accounting the benchmarks report per component (bench._cpu)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from bench._cpu import (
    LOADGEN,
    NATS,
    SUPERVISOR,
    ProcStat,
    attribute,
    cpu_between,
    cpu_snapshot,
    parse_stat,
    per_million,
)

_STAT = (
    "4242 (python3 (x) y) S 4200 4242 4200 0 -1 4194304 1 0 0 0 "
    "150 25 7 3 20 0 1 0 100 1000 10 18446744073709551615"
)


def test_a_stat_line_is_parsed_after_the_last_parenthesis_of_the_command_name():
    s = parse_stat(_STAT)
    assert s == ProcStat(pid=4242, ppid=4200, own_ticks=175, children_ticks=10)
    assert s.total_ticks == 185


def test_processes_are_attributed_by_command_line_and_children_inherit_their_parents_component():
    def st(pid: int, ppid: int) -> ProcStat:
        return ProcStat(pid, ppid, 0, 0)

    py = [sys.executable, "-m", "courier.cli.main"]
    stats = {p.pid: p for p in [st(1, 0), st(10, 1), st(11, 10), st(12, 11), st(13, 11)]}
    stats |= {p.pid: p for p in [st(14, 11), st(15, 14), st(16, 10), st(99, 1)]}
    cmdlines = {
        10: [sys.executable, "-m", "bench.e2e"],
        11: [*py, "--data-dir", "/tmp/d", "up", "--http-port", "1"],
        12: ["/venv/bin/nats-server", "-c", "nats.conf"],
        13: [*py, "writer"],
        14: [*py, "--config", "c.toml", "gateway"],
        15: [sys.executable, "-c", "from multiprocessing.spawn import spawn_main"],
        16: [sys.executable, "-c", "loadgen worker"],
        99: ["someone-elses-process"],
    }
    got = attribute(stats, cmdlines, root_pid=10)
    assert got == {
        10: LOADGEN,
        11: SUPERVISOR,
        12: NATS,
        13: "writer",
        14: "gateway",
        15: "gateway",
        16: LOADGEN,
    }


@pytest.mark.timeout(30)
def test_a_childs_cpu_is_counted_while_it_runs_and_after_it_was_reaped_without_double_counting():
    burn = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\n"
    before = cpu_snapshot()
    child = subprocess.Popen(
        [sys.executable, "-c", burn + "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while True:  # the child has burnt its 0.6 s and waits on stdin, still alive
            alive = cpu_between(before, cpu_snapshot())[LOADGEN]
            if alive >= 0.6 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()
    reaped = cpu_between(before, cpu_snapshot())[LOADGEN]
    assert alive >= 0.6
    assert alive <= reaped < alive + 0.5  # moved into our cutime, not counted twice


def test_per_million_totals_the_stack_components_and_leaves_the_load_generator_out():
    cpu = {"gateway": 4.0, "writer": 2.0, NATS: 1.0, LOADGEN: 9.0}
    out = per_million(cpu, 2_000_000, ("gateway", "writer", "closer", NATS))
    assert out == {
        "cpu_gateway_core_s_per_m": 2.0,
        "cpu_writer_core_s_per_m": 1.0,
        "cpu_closer_core_s_per_m": 0.0,
        "cpu_nats_core_s_per_m": 0.5,
        "cpu_total_core_s_per_m": 3.5,
    }
