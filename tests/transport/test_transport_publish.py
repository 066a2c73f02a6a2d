"""Transport.publish (courier.transport.publish) against a real nats-server: every ack goes
to its own publish, and every error path says what happened to the message."""

from __future__ import annotations

import asyncio

import pytest

from courier.errors import (
    PublishOutcomeUnknownError,
    TransportError,
    TransportUnavailableError,
)
from courier.transport import stream_name
from courier.transport.server import EmbeddedNats
from courier_testing import provisioned_transport


async def test_concurrent_publishes_each_get_the_ack_of_their_own_message(make_settings):
    t = await provisioned_transport(make_settings())
    try:
        bodies = [b"message %d\n" % i for i in range(200)]
        results = await asyncio.gather(
            *(
                t.publish_events("PlaySong", b, msg_id=f"m{i}", headers={}, timeout_secs=5)
                for i, b in enumerate(bodies)
            )
        )
        assert sorted(r.seq for r in results) == list(range(1, 201))
        for body, result in zip(bodies, results, strict=True):
            stored = await t.message_at_or_after("PlaySong", result.seq)
            assert stored is not None and stored.seq == result.seq
            assert stored.data == body
            assert result.stream == stream_name("PlaySong") and not result.duplicate
    finally:
        await t.close()


async def test_headers_and_the_message_id_are_stored_with_the_message(make_settings):
    t = await provisioned_transport(make_settings())
    try:
        r = await t.publish_events(
            "PlaySong", b"x\n", msg_id="id-1", headers={"Courier-Events": "1"}, timeout_secs=5
        )
        stored = await t.message_at_or_after("PlaySong", r.seq)
        assert stored is not None
        assert stored.headers["Courier-Events"] == "1"
        assert stored.headers["Nats-Msg-Id"] == "id-1"
    finally:
        await t.close()


async def test_a_publish_no_stream_listens_to_is_unavailable_and_says_so(make_settings):
    t = await provisioned_transport(make_settings())
    try:
        with pytest.raises(TransportUnavailableError, match="no stream answered"):
            await t.publish("courier.nowhere", b"x", msg_id="a", timeout_secs=2)
    finally:
        await t.close()


async def test_a_refused_publish_names_the_jetstream_error_and_is_not_stored(make_settings):
    t = await provisioned_transport(make_settings())
    try:
        await t.publish_events("PlaySong", b"a\n", msg_id="1", headers={}, timeout_secs=5)
        with pytest.raises(TransportError, match=r"refused: .*err_code=10071") as caught:
            await t.publish_events(
                "PlaySong",
                b"b\n",
                msg_id="2",
                headers={"Nats-Expected-Last-Sequence": "99"},
                timeout_secs=5,
            )
        assert not isinstance(caught.value, PublishOutcomeUnknownError)
        assert await t.stream_bounds("PlaySong") == (1, 1)
    finally:
        await t.close()


async def test_an_unanswered_publish_times_out_as_outcome_unknown_and_a_late_reply_is_ignored(
    make_settings,
):
    t = await provisioned_transport(make_settings())
    timed_out = asyncio.Event()
    requests = []

    async def answer_late(msg):
        requests.append(msg)
        await timed_out.wait()
        # The ack of a stored message, arriving after the publisher gave up on it.
        await t.nc.publish(msg.reply, b'{"stream":"COURIER_X","seq":777}')

    sub = await t.nc.subscribe("courier.slow", cb=answer_late)
    try:
        with pytest.raises(PublishOutcomeUnknownError, match=r"timed out after 0\.3s; it may"):
            await t.publish("courier.slow", b"x", msg_id="s1", timeout_secs=0.3)
        timed_out.set()
        await t.flush()
        # The next publish gets its own ack, not the late one.
        r = await t.publish_events("PlaySong", b"a\n", msg_id="p1", headers={}, timeout_secs=5)
        assert (r.stream, r.seq) == (stream_name("PlaySong"), 1)
        assert len(requests) == 1
    finally:
        await sub.unsubscribe()
        await t.close()


@pytest.mark.parametrize(
    ("reply", "error"),
    [(b"not json", "unreadable publish reply"), (b"{}", "without a stream sequence")],
)
async def test_a_reply_that_is_not_a_pub_ack_is_outcome_unknown_never_an_ack(
    make_settings, reply, error
):
    t = await provisioned_transport(make_settings())

    async def answer(msg):
        await t.nc.publish(msg.reply, reply)

    sub = await t.nc.subscribe("courier.odd", cb=answer)
    try:
        with pytest.raises(PublishOutcomeUnknownError, match=error):
            await t.publish("courier.odd", b"x", msg_id="o1", timeout_secs=5)
    finally:
        await sub.unsubscribe()
        await t.close()


async def test_publishing_resumes_after_the_server_restarts(
    make_settings, nats_server: EmbeddedNats
):
    settings = make_settings()
    t = await provisioned_transport(settings)
    try:
        await t.publish_events("PlaySong", b"a\n", msg_id="1", headers={}, timeout_secs=5)
        nats_server.stop()
        for _ in range(100):
            if not t.is_connected:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(TransportUnavailableError, match="not connected"):
            await t.publish_events("PlaySong", b"b\n", msg_id="2", headers={}, timeout_secs=1)
        nats_server.start()
        for _ in range(100):  # until reconnected (the client retries every second)
            if t.is_connected:
                break
            await asyncio.sleep(0.1)
        # The reply subscription came back with the connection: acks reach their publish.
        r = await t.publish_events("PlaySong", b"b\n", msg_id="2", headers={}, timeout_secs=5)
        assert (r.seq, r.duplicate) == (2, False)
    finally:
        await t.close()
