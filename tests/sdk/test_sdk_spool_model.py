"""The spool behaves like a simple in-memory queue, across crashes and torn writes."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from courier.sdk.spool import HEADER_BYTES, Spool, SpoolFull, scan_segment

SEGMENT_BYTES = 400
MAX_SPOOL_BYTES = 1500


class SpoolMachine(RuleBasedStateMachine):
    """Model: record id -> payload of every record not acknowledged, plus what was read."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="spool-model-"))
        self.spool = self._open()
        self.pending: dict[int, bytes] = {}
        self.read_ids: list[int] = []
        self.acked = 0
        self.last_id = 0

    def _open(self) -> Spool:
        return Spool(
            self.dir, fsync="never", segment_bytes=SEGMENT_BYTES, max_spool_bytes=MAX_SPOOL_BYTES
        )

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(payload=st.binary(min_size=0, max_size=120))
    def append(self, payload: bytes) -> None:
        room = MAX_SPOOL_BYTES - self.spool.pending_bytes
        if self.pending and HEADER_BYTES + len(payload) > room:
            with pytest.raises(SpoolFull):
                self.spool.append(payload, timeout_secs=0)
            return
        rid = self.spool.append(payload, timeout_secs=0)
        assert rid == self.last_id + 1, "record ids increase by one"
        self.last_id = rid
        self.pending[rid] = payload

    @rule(n=st.integers(1, 10))
    def read(self, n: int) -> None:
        records = self.spool.read(n, 10_000)
        expected = sorted(i for i in self.pending if i not in self.read_ids)[:n]
        assert [r.id for r in records] == expected
        assert all(r.payload == self.pending[r.id] for r in records), "no garbage is read"
        self.read_ids += [r.id for r in records]

    @precondition(lambda self: self.read_ids)
    @rule(data=st.data())
    def ack_a_prefix_of_what_was_read(self, data: st.DataObject) -> None:
        upto = data.draw(st.integers(1, len(self.read_ids)))
        acked = self.read_ids[:upto]
        released = sum(HEADER_BYTES + len(self.pending[i]) for i in acked)
        self.spool.commit(acked[-1], released)
        for i in acked:
            del self.pending[i]
        self.read_ids = self.read_ids[upto:]
        self.acked = acked[-1]

    @rule()
    def crash_and_reopen(self) -> None:
        self.spool.abandon()
        self.spool = self._open()
        self.read_ids = []  # unacknowledged records are read (and sent) again

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def tear_the_last_segment_and_reopen(self, data: st.DataObject) -> None:
        self.spool.abandon()
        segments = sorted(self.dir.glob("seg-*.log"))
        last = segments[-1]
        size = last.stat().st_size
        cut = data.draw(st.integers(0, size))
        records, _ = scan_segment(last)
        with open(last, "r+b") as f:
            f.truncate(cut)
        for rid, offset, rsize in records:
            if offset + rsize > cut:
                self.pending.pop(rid, None)  # torn: lost, like any write a crash interrupted
        self.spool = self._open()
        self.read_ids = []
        survivors = [i for i in self.pending if i <= self.last_id]
        self.last_id = max([self.acked, *survivors])

    @invariant()
    def depth_matches_the_model(self) -> None:
        assert self.spool.pending_records == len(self.pending)
        assert self.spool.pending_bytes == sum(HEADER_BYTES + len(p) for p in self.pending.values())

    @invariant()
    def fully_acknowledged_segments_are_deleted(self) -> None:
        for seg in sorted(self.dir.glob("seg-*.log"))[:-1]:
            records, _ = scan_segment(seg)
            assert records and records[-1][0] > self.spool.acked_through

    @invariant()
    def nothing_else_lives_in_the_directory(self) -> None:
        names = {n for n in os.listdir(self.dir) if not n.startswith("seg-")}
        assert names <= {".lock", "ledger.json"}


SpoolMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_the_spool_matches_an_in_memory_queue_across_crashes_and_torn_writes = SpoolMachine.TestCase
