"""The fault-injection seam: one module reads the hooks, and none is on by default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import courier
from courier.service import faults
from courier.service.faults import FaultHooks


def test_no_hooks_without_the_environment():
    hooks = FaultHooks.from_env({})
    assert hooks == FaultHooks()
    hooks.closer_after_step(3)  # no-op: still running
    hooks.writer_staged("x")


def test_hooks_are_read_from_the_environment(caplog: pytest.LogCaptureFixture):
    hooks = FaultHooks.from_env(
        {
            faults.CLOSER_CRASH_AFTER_STEP_ENV: "4",
            faults.WRITER_CRASH_AFTER_STAGING_ENV: "1",
            faults.CLOCK_OFFSET_ENV: "-2.5",
        }
    )
    assert hooks == FaultHooks(4, True, -2.5)
    assert "fault injection is on" in caplog.text


def test_the_closer_hook_kills_only_at_its_step(monkeypatch: pytest.MonkeyPatch):
    killed: list[str] = []
    monkeypatch.setattr(faults, "_kill_self", killed.append)
    hooks = FaultHooks(closer_crash_after_step=2)
    hooks.closer_after_step(1)
    hooks.writer_staged("p")
    hooks.closer_after_step(2)
    assert killed == ["the closer after step 2"]


def test_only_the_seam_reads_fault_variables():
    src = Path(courier.__file__).parent
    readers = [
        str(path.relative_to(src))
        for path in src.rglob("*.py")
        if re.search(r"COURIER_FAULT_", path.read_text())
    ]
    assert readers == ["service/faults.py"]
