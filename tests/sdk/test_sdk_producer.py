"""Producer behaviour a user sees, over an in-process fake gateway (httpx MockTransport)."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest
import zstandard

import courier
from courier.sdk import AsyncProducer, Producer, RejectedEvent, SpoolFull


class FakeGateway:
    """Accepts everything except events whose data has ``"bad": true``; can be switched off."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.up = threading.Event()
        self.up.set()

    def handler(self, request: httpx.Request) -> httpx.Response:
        if not self.up.is_set():
            return httpx.Response(503, headers={"Retry-After": "0"})
        body = zstandard.ZstdDecompressor().decompressobj().decompress(request.content)
        events = json.loads(body)["events"]
        rejected = []
        for i, e in enumerate(events):
            if e["data"].get("bad"):
                rejected.append({"index": i, "id": e["id"], "error": "bad event"})
            else:
                self.ids.append(e["id"])
        return httpx.Response(
            200, json={"accepted": len(events) - len(rejected), "rejected": rejected}
        )


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


def _producer(tmp_path, gateway: FakeGateway, **kw) -> Producer:
    kw.setdefault("backoff_max_secs", 0.05)
    return Producer(
        spool_dir=tmp_path / "spool", transport=httpx.MockTransport(gateway.handler), **kw
    )


def test_sent_events_are_delivered_once_and_the_spool_empties(tmp_path, gateway):
    with _producer(tmp_path, gateway) as p:
        ids = [p.send("PlaySong", {"track_id": "t", "ms_played": i}) for i in range(2500)]
        assert p.flush(10)
        stats = p.stats()
    assert sorted(gateway.ids) == sorted(ids)
    assert stats.sent == 2500 and stats.spool_records == 0 and stats.oldest_unsent_age_secs == 0
    assert len(set(ids)) == 2500 and all(i[14] == "7" for i in ids), "UUIDv7 ids"


def test_rejected_events_go_to_the_rejected_log_and_the_callback_not_back_to_the_gateway(
    tmp_path, gateway
):
    seen: list[RejectedEvent] = []
    with _producer(tmp_path, gateway, on_rejected=seen.append) as p:
        good = p.send("PlaySong", {"ms_played": 1})
        bad = p.send("PlaySong", {"bad": True}, id="bad-1")
        assert p.flush(10)
    assert gateway.ids == [good]
    assert [e.id for e in seen] == [bad] and seen[0].reason == "bad event"
    (entry,) = p.rejected_log.read()
    assert entry["id"] == "bad-1" and entry["reason"] == "bad event"
    assert entry["event"]["data"] == {"bad": True}


def test_a_full_spool_raises_spool_full_instead_of_dropping(tmp_path, gateway):
    gateway.up.clear()
    p = _producer(tmp_path, gateway, max_spool_bytes=4096, when_full="raise")
    try:
        with pytest.raises(SpoolFull):
            for i in range(1000):
                p.send("PlaySong", {"ms_played": i})
        spooled = p.stats().spool_records
        assert 0 < spooled < 1000
        gateway.up.set()
        assert p.flush(10)
        assert len(gateway.ids) == spooled
    finally:
        p.close()


def test_a_full_spool_blocks_send_until_the_gateway_makes_room(tmp_path, gateway):
    gateway.up.clear()
    with _producer(tmp_path, gateway, max_spool_bytes=4096, full_timeout_secs=30) as p:
        threading.Timer(0.5, gateway.up.set).start()
        for i in range(200):
            p.send("PlaySong", {"ms_played": i})
        assert p.flush(10)
    assert len(gateway.ids) == 200


def test_close_leaves_undelivered_events_on_disk_for_the_next_producer(tmp_path, gateway):
    gateway.up.clear()
    p = _producer(tmp_path, gateway)
    ids = [p.send("PlaySong", {"ms_played": i}) for i in range(10)]
    assert p.close(timeout=0.2) is False
    assert p.stats().spool_records == 10
    gateway.up.set()
    with _producer(tmp_path, gateway) as again:
        assert again.flush(10)
    assert sorted(gateway.ids) == sorted(ids)


def test_a_spool_directory_has_one_producer_at_a_time(tmp_path, gateway):
    with _producer(tmp_path, gateway), pytest.raises(courier.errors.StorageError):
        _producer(tmp_path, gateway)


def test_an_invalid_type_name_is_refused_at_send(tmp_path, gateway):
    with _producer(tmp_path, gateway) as p, pytest.raises(ValueError):
        p.send("not a type", {})


def test_fsync_always_group_commits_concurrent_sends(tmp_path, gateway):
    with _producer(tmp_path, gateway, fsync="always") as p:
        threads = [
            threading.Thread(target=lambda: [p.send("PlaySong", {"n": i}) for i in range(50)])
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert p.flush(10)
    assert len(gateway.ids) == 200


async def test_the_async_producer_sends_without_blocking_the_loop(tmp_path, gateway):
    async with AsyncProducer(
        spool_dir=tmp_path / "spool", transport=httpx.MockTransport(gateway.handler)
    ) as p:
        ids = await asyncio.gather(*(p.send("Search", {"query": str(i)}) for i in range(100)))
        assert await p.flush(10)
    assert sorted(gateway.ids) == sorted(ids)


def test_importing_courier_does_not_load_the_sdk():
    import subprocess
    import sys

    code = "import sys, courier; assert 'courier.sdk' not in sys.modules; courier.Producer"
    subprocess.run([sys.executable, "-c", code], check=True)
