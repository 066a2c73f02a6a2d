"""Transport adapter against a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from nats.js import JetStreamContext

from courier.errors import (
    ConcurrentUpdateError,
    KeyExistsError,
    ProvisioningError,
    TransportUnavailableError,
)
from courier.transport import (
    CATALOG_KV,
    Transport,
    provision_base,
    provision_type,
    verify_type,
)
from courier.transport.tasks import cancel_and_wait
from courier_testing import CancelSwallower, provisioned_transport


async def test_provisioning_is_idempotent_and_verify_detects_a_changed_config(make_settings):
    settings = make_settings()
    t = await provisioned_transport(settings)
    try:
        await provision_type(t, settings, "PlaySong")
        await verify_type(t, settings, "PlaySong")
        other = make_settings(writer={"ack_wait_secs": 7})
        with pytest.raises(ProvisioningError, match="ack_wait"):
            await verify_type(t, other, "PlaySong")
        with pytest.raises(ProvisioningError, match="does not exist"):
            await verify_type(t, settings, "Missing")
    finally:
        await t.close()


async def test_a_retried_publish_with_the_same_msg_id_is_stored_once(make_settings):
    settings = make_settings()
    t = await provisioned_transport(settings)
    try:
        first = await t.publish_events("PlaySong", b"{}\n", msg_id="m1", headers={}, timeout_secs=2)
        again = await t.publish_events("PlaySong", b"{}\n", msg_id="m1", headers={}, timeout_secs=2)
        assert (first.seq, first.duplicate) == (1, False)
        assert (again.seq, again.duplicate) == (1, True)
    finally:
        await t.close()


async def test_publishing_to_an_unprovisioned_type_is_unavailable_not_stored(make_settings):
    t = await provisioned_transport(make_settings())
    try:
        with pytest.raises(TransportUnavailableError):
            await t.publish_events("Nope", b"x", msg_id="a", headers={}, timeout_secs=1)
    finally:
        await t.close()


async def test_the_oldest_unacked_message_pins_progress_until_it_is_acked(make_settings):
    t = await provisioned_transport(make_settings())
    try:
        assert (await t.progress("PlaySong")).oldest_unacked_at is None
        await t.publish_events("PlaySong", b"a\n", msg_id="1", headers={}, timeout_secs=2)
        await t.publish_events("PlaySong", b"b\n", msg_id="2", headers={}, timeout_secs=2)
        consumer = await t.pull_consumer("PlaySong")
        got = await consumer.fetch(10, 1.0)
        assert [d.seq for d in got] == [1, 2]
        p = await t.progress("PlaySong")
        assert p.oldest_unacked_at == pytest.approx(got[0].published_at)
        await t.ack(got[1:])
        p = await t.progress("PlaySong")
        assert p.ack_floor_seq == 0 and p.oldest_unacked_at == pytest.approx(got[0].published_at)
        await t.ack(got[:1])
        p = await t.progress("PlaySong")
        assert p.ack_floor_seq == 2 and p.oldest_unacked_at is None
        assert await consumer.fetch(10, 0.2) == []
    finally:
        await t.close()


async def test_kv_create_and_update_are_compare_and_set(make_settings):
    t = await provisioned_transport(make_settings())
    try:
        kv = await t.key_value(CATALOG_KV)
        rev = await kv.create("T.1", b"a")
        with pytest.raises(KeyExistsError):
            await kv.create("T.1", b"b")
        rev2 = await kv.update("T.1", b"c", rev)
        with pytest.raises(ConcurrentUpdateError):
            await kv.update("T.1", b"d", rev)
        entry = await kv.get("T.1")
        assert entry is not None and entry.value == b"c" and entry.revision == rev2
        assert await kv.keys() == ["T.1"]
        assert await kv.get("none") is None
        await kv.put("T.2", b"x")
        assert await kv.keys() == ["T.1", "T.2"]
        await kv.delete("T.2")
        assert await kv.get("T.2") is None
    finally:
        await t.close()


async def test_no_server_there_is_a_clear_error_within_the_connect_timeout_not_a_hang():
    from courier.transport import free_port

    url = f"nats://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(TransportUnavailableError, match=rf"cannot connect to NATS at {url}"):
        await Transport.connect(url, connect_timeout_secs=1)
    assert time.monotonic() - started < 10
    # A service waiting for NATS gets its whole wait, then the same error.
    started = time.monotonic()
    with pytest.raises(TransportUnavailableError, match="within 3s"):
        await Transport.connect(url, connect_timeout_secs=1, wait_for_server_secs=3)
    assert 3 <= time.monotonic() - started < 12


async def test_a_comma_separated_url_list_connects_to_any_live_server(make_settings, nats_server):
    from courier.transport import free_port

    dead = f"nats://127.0.0.1:{free_port()}"
    t = await Transport.connect(f"{dead}, {nats_server.url}")
    try:
        assert t.is_connected
        await provision_base(t, make_settings())
    finally:
        await t.close()


async def test_a_scan_streams_a_range_skips_deleted_messages_and_leaves_no_consumer(
    make_settings,
):
    settings = make_settings()
    t = await provisioned_transport(settings)
    try:
        for i in range(1, 2501):
            await t.publish_events(
                "PlaySong", f"{{}}\n#{i}".encode(), msg_id=f"s{i}", headers={}, timeout_secs=5
            )
        for seq in (5, 6, 2000):
            await t.js.delete_msg("COURIER_PlaySong", seq)
        seqs = [m.seq async for m in t.scan("PlaySong", 3, 2100, batch_messages=300)]
        assert seqs == [s for s in range(3, 2101) if s not in (5, 6, 2000)]
        scanned = [m async for m in t.scan("PlaySong", 2499, 9999)]  # past the end: stops
        assert [m.seq for m in scanned] == [2499, 2500]
        assert scanned[-1].data.endswith(b"#2500") and scanned[-1].published_at > 0
        async with contextlib.aclosing(t.scan("PlaySong", 1, 2500)) as early:
            async for _ in early:
                break  # stopped early: the scan's consumer goes all the same
        info = await t.js.stream_info("COURIER_PlaySong")
        assert info.state.consumer_count == 2  # writer + audit: no scan consumer left
        assert (await t.message_at_or_after("PlaySong", 5)).seq == 7
        assert await t.message_at_or_after("PlaySong", 2501) is None
    finally:
        await t.close()


async def test_a_scan_yields_every_message_when_a_batch_is_lost_on_the_way(
    make_settings, monkeypatch, caplog
):
    """Batches of large messages can outgrow what the server buffers for a client: it
    drops the connection and, without acks, never sends those messages again. The scan
    must notice (the consumer delivered past what it yielded) and read them again."""
    import asyncio

    import courier.transport.client as client

    settings = make_settings()
    t = await provisioned_transport(settings)
    try:
        big = b"x" * 150_000
        await asyncio.gather(
            *(
                t.publish_events(
                    "PlaySong", big + f"#{i}".encode(), msg_id=f"b{i}", headers={}, timeout_secs=30
                )
                for i in range(1, 601)
            )
        )
        # One fetch of every message (90 MB) is more than the server's 64 MB per client,
        # and a client whose loop stalls right after asking (a busy CPU) cannot drain it
        # in time: the server queues past its limit and drops the connection.
        monkeypatch.setattr(client, "SCAN_BATCH_BYTES", 1 << 40, raising=False)
        fetch = JetStreamContext.PullSubscription.fetch
        stalled: list[bool] = []

        async def fetch_then_stall(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not stalled:  # once: the first fetch's request goes out, then 3 s of nothing
                stalled.append(True)
                asyncio.get_running_loop().call_later(0.005, time.sleep, 3.0)
            return await fetch(self, *args, **kwargs)

        monkeypatch.setattr(JetStreamContext.PullSubscription, "fetch", fetch_then_stall)
        seqs = [m.seq async for m in t.scan("PlaySong", 1, 600)]
        assert seqs == list(range(1, 601))
        assert "lost on the way" in caplog.text  # the loss happened and was made good
    finally:
        await t.close()


async def test_close_ends_a_reconnect_loop_that_swallows_its_cancel(nats_server):
    # On Python 3.11, asyncio.wait_for loses a cancellation that arrives as its connect
    # fails (cpython gh-86296), and nats-py's reconnect loop connects under it: against a
    # stopped server it could swallow close()'s cancel and retry for ever (a CI run hung
    # 300 s at teardown). This loop swallows three cancels, as such a loop would.
    transport = await Transport.connect(nats_server.url)
    stubborn = CancelSwallower(3, sleep_secs=0.01)
    transport.nc._reconnection_task = stubborn.task
    try:
        await asyncio.wait_for(transport.close(), 10)
        assert stubborn.task.done() and stubborn.swallowed == 3
    finally:
        await cancel_and_wait([stubborn.task])
