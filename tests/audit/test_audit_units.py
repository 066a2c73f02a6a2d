"""Audit building blocks above their seams: counting lines, exactly-once tallies, the spill rule."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import zstandard

from courier.audit import AuditStore, GatewayCounts, GatewayTally, StreamCounts, TypeView
from courier.audit.counter import add_messages, count_events
from courier.audit.report import DeliveredScanner, audit_type
from courier.errors import TransportError
from courier.schema import TypeSettings
from courier.settings import load_settings
from courier.storage import Layout
from courier.transport import KVEntry, MemoryKeyValue

WIDTH = 10


@dataclass
class _Msg:
    seq: int
    published_at: float
    data: bytes = b'{"id":"a"}\n{"id":"b"}\n'
    headers: dict[str, str] = field(default_factory=dict)


def test_events_are_counted_from_the_header_else_from_the_lines_of_the_body():
    assert count_events({"Courier-Events": "7"}, b"") == 7
    assert count_events({}, b'{"a":1}\n{"a":2}\n{"a":3}\n') == 3
    assert count_events({}, b'{"a":1}\n{"a":2}') == 2
    body = zstandard.ZstdCompressor().compress(b"x\ny\n")
    assert count_events({"Content-Encoding": "zstd"}, body) == 2
    assert count_events({}, b"") == 0


def test_messages_already_counted_are_skipped_when_redelivered():
    counts = StreamCounts()
    assert add_messages(counts, [_Msg(1, 100.0), _Msg(2, 111.0)], WIDTH, 2.0) == (2, 4, 0)
    # A crash after the counts were stored but before the ack redelivers 1-2.
    assert add_messages(counts, [_Msg(1, 100.0), _Msg(2, 111.0), _Msg(3, 119.0)], WIDTH, 2.0) == (
        1,
        2,
        2,
    )
    assert counts.last_seq == 3
    assert counts.buckets == {100: [1, 2, 2], 110: [2, 4, 2]}


class _FlakyKV(MemoryKeyValue):
    """Applies the next update, then reports a failure: the outcome the gateway never learns."""

    def __init__(self) -> None:
        super().__init__()
        self.lose_next_answer = False

    async def update(self, key: str, value: bytes, last_revision: int) -> int:
        rev = await super().update(key, value, last_revision)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise TransportError("timed out waiting for the KV answer")
        return rev

    async def create(self, key: str, value: bytes) -> int:
        rev = await super().create(key, value)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise TransportError("timed out waiting for the KV answer")
        return rev


async def test_a_gateway_flush_with_an_unknown_outcome_is_not_counted_twice():
    kv = _FlakyKV()
    store = AuditStore(kv)
    tally = GatewayTally(WIDTH, "gw1")
    tally.add("PlaySong", 105.0, accepted=3)
    tally.add("PlaySong", 105.0, rejected=1)
    kv.lose_next_answer = True
    await tally.flush(store, retention_secs=10**10)
    assert tally.unflushed
    tally.add("PlaySong", 115.0, accepted=2)
    await tally.flush(store, retention_secs=10**10)
    assert not tally.unflushed
    counts = await store.gateway_counts("PlaySong")
    assert (counts.accepted(100), counts.rejected(100), counts.accepted(110)) == (3, 1, 2)


async def test_two_gateways_add_up_without_losing_each_others_counts():
    store = AuditStore(MemoryKeyValue())
    a, b = GatewayTally(WIDTH, "a"), GatewayTally(WIDTH, "b")
    for _ in range(3):
        a.add("Search", 101.0, accepted=1)
        b.add("Search", 102.0, accepted=10)
        await a.flush(store, retention_secs=10**10)
        await b.flush(store, retention_secs=10**10)
    assert (await store.gateway_counts("Search")).accepted(100) == 33


def _view(stream: dict[int, list[int]], gateway: dict[int, list[int]]) -> TypeView:
    return TypeView(
        name="PlaySong",
        settings=TypeSettings(),
        grace_secs=1,
        enabled_at=100.0,
        writer_watermark=1000.0,
        oldest_unacked_at=None,
        writer_pending=0,
        audit_watermark=1000.0,
        audit_pending=0,
        stream=StreamCounts(last_seq=9, spill_secs=2.0, buckets=stream),
        gateway=GatewayCounts(buckets=gateway),
    )


@pytest.fixture
def audit_settings(tmp_path):
    return load_settings(
        data_dir=tmp_path,
        bucket_width_secs=WIDTH,
        audit={"spill_secs": 2.0, "gateway_flush_interval_secs": 1.0},
    )


def _problems(view: TypeView, settings) -> dict[int, list[str]]:
    scanner = DeliveredScanner(Layout(settings.data_dir, WIDTH))
    rows = audit_type(view, [100, 110, 120], scanner, settings, now=1000.0)
    return {b.bucket_start: [p.kind for p in b.problems] for b in rows}


def test_an_event_received_at_a_bucket_end_and_stored_in_the_next_is_not_a_loss(audit_settings):
    # 5 accepted in 100, but one was stamped by the transport at 110.5 (head of 110).
    view = _view({100: [1, 4, 4], 110: [1, 1, 1]}, {100: [5, 0]})
    assert _problems(view, audit_settings) == {100: [], 110: [], 120: []}


def test_accepted_events_missing_from_the_stream_are_a_loss_in_their_bucket(audit_settings):
    view = _view({100: [1, 4, 4], 110: [1, 3, 0]}, {100: [4, 0], 110: [5, 0]})
    assert _problems(view, audit_settings) == {100: [], 110: ["lost_in_stream"], 120: []}


def test_the_audit_kv_value_round_trips(audit_settings):
    counts = StreamCounts(5, 2.0, {100: [1, 2, 0]})
    assert StreamCounts.decode(counts.encode()) == counts
    assert KVEntry("k", b"", 1).revision == 1
