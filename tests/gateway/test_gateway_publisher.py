"""Group commit: coalescing, splitting, acks and failures of the Coalescer."""

from __future__ import annotations

import asyncio
import json

import pytest

from courier.errors import PublishOutcomeUnknownError, StreamFullError
from courier.gateway import EVENTS_HEADER, Coalescer, MemorySink, message_id


def lines(prefix: str, n: int, size: int = 20) -> tuple[bytes, list[str]]:
    ids = [f"{prefix}-{i}" for i in range(n)]
    body = b"".join(json.dumps({"id": i, "pad": "x" * size}).encode() + b"\n" for i in ids)
    return body, ids


async def test_concurrent_requests_of_one_type_share_messages():
    sink = MemorySink(delay_secs=0.01)
    coalescer = Coalescer(sink, max_message_bytes=1 << 20, flushers_per_type=2)
    requests = [lines(f"r{k}", 5) for k in range(50)]
    await asyncio.gather(*(coalescer.submit("PlaySong", 1, b, ids) for b, ids in requests))
    assert len(sink.messages) < 10
    stored = [line for m in sink.messages for line in m.body.splitlines()]
    assert len(stored) == 250
    assert sum(int(m.headers[EVENTS_HEADER]) for m in sink.messages) == 250
    for m in sink.messages:
        ids = [json.loads(line)["id"] for line in m.body.splitlines()]
        assert m.msg_id == message_id("PlaySong", ids)


class GatedSink(MemorySink):
    """A sink whose publishes wait until the test opens the gate (no race against a clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.publishing = asyncio.Event()
        self.gate = asyncio.Event()

    async def publish(
        self, event_type: str, body: bytes, *, msg_id: str, headers: dict[str, str]
    ) -> None:
        self.publishing.set()
        await self.gate.wait()
        await super().publish(event_type, body, msg_id=msg_id, headers=headers)


async def _publishing(sink: GatedSink) -> None:
    """Wait until a publish is held at the gate, then let every other task run to its next wait."""
    await asyncio.wait_for(sink.publishing.wait(), 5)
    for _ in range(20):
        await asyncio.sleep(0)


async def test_submit_returns_only_after_the_publish_is_acknowledged():
    sink = GatedSink()
    coalescer = Coalescer(sink, max_message_bytes=1 << 20, flushers_per_type=1)
    task = asyncio.create_task(coalescer.submit("PlaySong", 1, *lines("a", 3)))
    await _publishing(sink)
    assert not task.done(), "submit returned while its publish was not acknowledged"
    sink.gate.set()
    await asyncio.wait_for(task, 5)
    assert len(sink.messages) == 1


async def test_a_request_larger_than_a_message_is_split_on_line_boundaries():
    sink = MemorySink()
    coalescer = Coalescer(sink, max_message_bytes=1000, flushers_per_type=4)
    body, ids = lines("big", 100)
    await coalescer.submit("PlaySong", 1, body, ids)
    assert len(sink.messages) > 1
    assert all(len(m.body) <= 1000 for m in sink.messages)
    got = [json.loads(line)["id"] for m in sink.messages for line in m.body.splitlines()]
    assert sorted(got) == sorted(ids)
    assert sum(int(m.headers[EVENTS_HEADER]) for m in sink.messages) == 100


async def test_types_and_schema_versions_never_share_a_message():
    sink = MemorySink(delay_secs=0.01)
    coalescer = Coalescer(sink, max_message_bytes=1 << 20, flushers_per_type=1)
    await asyncio.gather(
        coalescer.submit("PlaySong", 1, *lines("a", 2)),
        coalescer.submit("PlaySong", 2, *lines("b", 2)),
        coalescer.submit("Search", 1, *lines("c", 2)),
    )
    keys = {(m.event_type, m.headers["Courier-Schema-Version"]) for m in sink.messages}
    assert keys == {("PlaySong", "1"), ("PlaySong", "2"), ("Search", "1")}


@pytest.mark.parametrize(
    "error", [StreamFullError("full"), PublishOutcomeUnknownError("timed out")]
)
async def test_a_failed_publish_fails_every_request_in_the_message(error):
    sink = MemorySink(delay_secs=0.01)
    sink.fail_with = error
    coalescer = Coalescer(sink, max_message_bytes=1 << 20, flushers_per_type=1)
    results = await asyncio.gather(
        *(coalescer.submit("PlaySong", 1, *lines(f"r{k}", 2)) for k in range(5)),
        return_exceptions=True,
    )
    assert all(r is error for r in results)
    assert sink.messages == []


async def test_the_same_ids_make_the_same_message_id():
    assert message_id("A", ["1", "2"]) == message_id("A", ["1", "2"])
    assert message_id("A", ["1", "2"]) != message_id("A", ["12"])
    assert message_id("A", ["1"]) != message_id("B", ["1"])


async def test_close_waits_for_messages_in_flight_and_refuses_new_ones():
    sink = GatedSink()
    coalescer = Coalescer(sink, max_message_bytes=1 << 20, flushers_per_type=1)
    task = asyncio.create_task(coalescer.submit("PlaySong", 1, *lines("a", 1)))
    await _publishing(sink)
    closing = asyncio.create_task(coalescer.close())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not closing.done(), "close returned while a publish was in flight"
    sink.gate.set()
    await asyncio.wait_for(closing, 5)
    await task
    assert len(sink.messages) == 1
    with pytest.raises(Exception, match="shutting down"):
        await coalescer.submit("PlaySong", 1, *lines("b", 1))


class CountingGatedSink(GatedSink):
    """A gated sink that knows how many publishes are held at its gate."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.changed = asyncio.Event()

    async def publish(
        self, event_type: str, body: bytes, *, msg_id: str, headers: dict[str, str]
    ) -> None:
        self.in_flight += 1
        self.changed.set()
        try:
            await super().publish(event_type, body, msg_id=msg_id, headers=headers)
        finally:
            self.in_flight -= 1


async def _until(sink: CountingGatedSink, in_flight: int) -> None:
    async def wait() -> None:
        while sink.in_flight != in_flight:
            sink.changed.clear()
            await sink.changed.wait()

    await asyncio.wait_for(wait(), 5)


async def test_publishes_pipeline_up_to_the_limit_while_others_are_in_flight():
    # One flusher per request that finds the others busy, up to the limit; beyond it,
    # requests wait and travel together in the next message.
    sink = CountingGatedSink()
    coalescer = Coalescer(sink, max_message_bytes=1 << 20, flushers_per_type=3)
    tasks = []
    for k in range(3):
        b, ids = lines(f"p{k}", 2)
        tasks.append(asyncio.create_task(coalescer.submit("PlaySong", 1, b, ids)))
        await _until(sink, k + 1)
    for k in range(3, 6):
        b, ids = lines(f"p{k}", 2)
        tasks.append(asyncio.create_task(coalescer.submit("PlaySong", 1, b, ids)))
    await _publishing(sink)
    assert sink.in_flight == 3  # the limit: the last three requests are queued
    sink.gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert len(sink.events_of("PlaySong")) == 12
    assert len(sink.messages) == 4  # three alone, then the queued three in one message
