"""PullConsumer.fetch (courier.transport.pull.LeanPull) against a real nats-server: every
message comes once, in order, at most a batch at a time, and no delivery is left behind."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from nats.aio.msg import Msg

from courier.errors import TransportError
from courier.transport import AUDIT_CONSUMER, WRITER_CONSUMER, Delivery, Transport, stream_name
from courier_testing import eventually, provisioned_transport


async def _publish(t: Transport, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await t.publish_events(
            "PlaySong",
            b"m%d\n" % i,
            msg_id=f"m{i}",
            headers={"Courier-Events": "1"},
            timeout_secs=5,
        )


async def test_fetches_bring_every_message_once_in_order_and_at_most_a_batch(make_settings):
    t = await provisioned_transport(make_settings())
    try:
        await _publish(t, 250)
        consumer = await t.pull_consumer("PlaySong")
        sizes, seqs = [], []
        while got := await consumer.fetch(100, 0.5):
            sizes.append(len(got))
            seqs.extend(d.seq for d in got)
            assert all(d.num_delivered == 1 for d in got)
            await t.ack(got)
        assert sizes == [100, 100, 50]
        assert seqs == list(range(1, 251))
        assert (await t.progress("PlaySong")).ack_floor_seq == 250
    finally:
        await t.close()


async def test_a_headers_only_consumer_brings_headers_and_no_body(make_settings):
    t = await provisioned_transport(make_settings())
    try:
        await _publish(t, 3)
        got = await (await t.pull_consumer("PlaySong", AUDIT_CONSUMER)).fetch(10, 0.5)
        assert [d.seq for d in got] == [1, 2, 3]
        assert all(d.data == b"" and d.headers["Courier-Events"] == "1" for d in got)
    finally:
        await t.close()


async def test_a_waiting_fetch_returns_the_message_published_meanwhile(make_settings):
    t = await provisioned_transport(make_settings())
    try:
        consumer = await t.pull_consumer("PlaySong")
        assert await consumer.fetch(1, 0.2) == []  # idle: nothing, no error
        started = time.monotonic()
        waiting = asyncio.create_task(consumer.fetch(1, 30.0))
        await _publish(t, 1)
        got = await asyncio.wait_for(waiting, 30.0)
        assert [d.data for d in got] == [b"m0\n"]
        # The message ended the wait, not the request's 30 s expiry.
        assert time.monotonic() - started < 25.0
    finally:
        await t.close()


async def test_a_message_delivered_after_its_fetch_gave_up_comes_with_the_next_fetch(
    make_settings,
):
    t = await provisioned_transport(make_settings(writer={"ack_wait_secs": 60}))
    try:
        consumer = await t.pull_consumer("PlaySong")
        waiting = asyncio.create_task(consumer.fetch(1, 30.0))

        async def waiting_on_the_server() -> int:
            info = await t.js.consumer_info(stream_name("PlaySong"), WRITER_CONSUMER)
            return int(info.num_waiting or 0)

        # Let it send its request ...
        await eventually(waiting_on_the_server, what="the fetch's request", interval_secs=0.02)
        waiting.cancel()  # ... and give up on it: the request still waits on the server
        await _publish(t, 1)
        got = await consumer.fetch(10, 5.0)
        # Delivered once, to the abandoned request, and handed over now: not left to
        # come back after ack_wait (60 s).
        assert [(d.seq, d.num_delivered) for d in got] == [(1, 1)]
    finally:
        await t.close()


async def test_a_consumer_that_does_not_exist_fails_the_fetch_and_says_which(make_settings):
    t = await provisioned_transport(make_settings())
    try:
        consumer = await t.pull_consumer("PlaySong", "nobody")
        with pytest.raises(
            TransportError, match=r"fetch from PlaySong failed: no consumer .*nobody"
        ):
            await consumer.fetch(10, 1.0)
    finally:
        await t.close()


@pytest.mark.parametrize(
    "form",
    [
        "$JS.ACK.COURIER_PlaySong.writer.{d}.{s}.{c}.{ns}.7",
        "$JS.ACK.hub.ACCHASH.COURIER_PlaySong.writer.{d}.{s}.{c}.{ns}.7.x9",
        "$JS.ACK.hub.ACCHASH.COURIER_PlaySong.writer.{d}.{s}.{c}.{ns}.7",
    ],
)
def test_a_delivery_reads_seq_deliveries_and_time_exactly_as_nats_py_does(form):
    """The writer and the auditor bucket by published_at: it must equal nats-py's
    value to the last digit, half microseconds included."""
    rng = random.Random(13)
    for i in range(2000):
        ns = rng.randrange(1_700_000_000 * 10**9, 1_900_000_000 * 10**9)
        if i % 2:
            ns = ns // 1000 * 1000 + 500
        msg = Msg(_client=None, reply=form.format(d=i % 4 + 1, s=i + 1, c=i, ns=ns))  # type: ignore[arg-type]
        md = msg.metadata
        d = Delivery(msg)
        assert (d.seq, d.num_delivered, d.published_at) == (
            md.sequence.stream,
            md.num_delivered,
            md.timestamp.timestamp(),
        )
