"""The repair log: one record per repair call, written before the repair and finished after."""

from __future__ import annotations

import logging

import pytest

from courier.errors import RepairRefusedError, TransportError
from courier.repair import RepairLog
from courier.transport import MemoryKeyValue


async def test_a_repair_is_recorded_as_started_before_it_runs_and_done_after(caplog):
    kv = MemoryKeyValue()
    log = RepairLog(kv)
    caplog.set_level(logging.INFO, logger="courier.repair")
    async with log.recording("redeliver", "PlaySong", "admin", {"from_seq": 3}) as record:
        during = await log.list()
        record.counts = {"messages": 7}
    assert [(r.outcome, r.arguments) for r in during] == [("started", {"from_seq": 3})]
    assert during[0].finished_at is None
    [done] = await log.list()
    assert (done.outcome, done.principal, done.arguments) == ("done", "admin", {"from_seq": 3})
    assert done.counts == {"messages": 7} and done.finished_at is not None
    [line] = [r.getMessage() for r in caplog.records if r.name == "courier.repair"]
    assert "redeliver PlaySong from_seq=3 by admin: done [messages=7]" in line


async def test_a_refused_or_failed_repair_is_recorded_with_the_error_and_re_raised():
    log = RepairLog(MemoryKeyValue())
    with pytest.raises(RepairRefusedError):
        async with log.recording("redeliver", "PlaySong", "admin", {}):
            raise RepairRefusedError("data is gone")
    with pytest.raises(TransportError):
        async with log.recording("republish", "PlaySong", "admin", {}):
            raise TransportError("NATS went away")
    failed, refused = await log.list()
    assert (refused.outcome, refused.error) == ("refused", "data is gone")
    assert (failed.outcome, failed.error) == ("failed", "NATS went away")


class _ReadOnlyKV(MemoryKeyValue):
    async def create(self, key: str, value: bytes) -> int:
        raise TransportError("KV unavailable")


async def test_a_repair_whose_record_cannot_be_written_does_not_run():
    ran = False
    with pytest.raises(TransportError):
        async with RepairLog(_ReadOnlyKV()).recording("redeliver", "PlaySong", "admin", {}):
            ran = True
    assert not ran


async def test_the_list_is_newest_first_and_limited():
    clock = iter(range(1_000, 2_000)).__next__
    log = RepairLog(MemoryKeyValue(), clock=lambda: float(clock()))
    for i in range(5):
        async with log.recording("redeliver", f"T{i}", "admin", {}):
            pass
    assert [r.event_type for r in await log.list(limit=3)] == ["T4", "T3", "T2"]
