"""The SDK against a real gateway and nats-server: outages and kill -9 lose nothing, duplicate nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

from courier.gateway import NatsSink
from courier.sdk import Producer
from courier.transport import free_port
from producer_testing import SwitchableSink, closed_ids, http_gateway, wait_for


async def test_events_sent_while_the_gateway_is_down_then_503_arrive_exactly_once(
    pipeline, tmp_path
):
    port = free_port()
    p = Producer(
        spool_dir=tmp_path / "spool",
        gateway_url=f"http://127.0.0.1:{port}",
        backoff_initial_secs=0.05,
        backoff_max_secs=0.2,
    )
    try:
        # Down: nothing listens on the port.
        ids = [p.send("PlaySong", {"track_id": "down", "ms_played": i}) for i in range(300)]
        await wait_for(lambda: p.stats().retries >= 2, what="retries while down")
        sink = SwitchableSink(pipeline.transport, 5.0)
        sink.down = True
        async with http_gateway(pipeline, port=port, sink=sink):
            # Up, but the transport is unavailable: 503 with Retry-After.
            ids += [p.send("PlaySong", {"track_id": "503", "ms_played": i}) for i in range(300)]
            retries = p.stats().retries
            await wait_for(lambda: p.stats().retries > retries, what="retries on 503")
            assert p.stats().sent == 0
            sink.down = False
            ids += [p.send("PlaySong", {"track_id": "up", "ms_played": i}) for i in range(300)]
            assert await asyncio.to_thread(p.flush, 30)
    finally:
        p.close()
    stats = p.stats()
    assert stats.sent == 900 and stats.rejected == 0 and stats.spool_records == 0
    counts = await closed_ids(pipeline, "PlaySong")
    assert counts.keys() == set(ids)
    assert set(counts.values()) == {1}


_CHILD = textwrap.dedent(
    """
    import sys
    from courier.sdk import Producer
    p = Producer(spool_dir=sys.argv[1], gateway_url=sys.argv[2], batch_max_events=200)
    for i in range(1_000_000):
        event_id = p.send("PlaySong", {"track_id": "kill", "ms_played": i}, id=f"k-{i}")
        if i % 50 == 49:
            print(event_id, flush=True)  # every id up to this one is spooled
    """
)


async def test_a_producer_killed_mid_stream_resends_on_restart_and_nothing_is_lost(
    pipeline, tmp_path
):
    spool = tmp_path / "spool"
    async with http_gateway(pipeline, sink=NatsSink(pipeline.transport, 5.0)) as url:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(spool), url],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert child.stdout is not None
            last = ""
            for _ in range(60):  # 3000 events spooled, some delivered
                last = (await asyncio.to_thread(child.stdout.readline)).decode().strip()
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        spooled = int(last.removeprefix("k-")) + 1
        with Producer(spool_dir=spool, gateway_url=url) as p:
            assert await asyncio.to_thread(p.flush, 30)
    counts = await closed_ids(pipeline, "PlaySong")
    expected = {f"k-{i}" for i in range(spooled)}
    assert expected <= counts.keys(), f"lost {len(expected - counts.keys())} spooled events"
    assert set(counts.values()) == {1}
