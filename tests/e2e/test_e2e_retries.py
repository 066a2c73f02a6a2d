"""Batches retried after a 503 or a lost ack (timeout) are delivered exactly once."""

from __future__ import annotations

import time
from collections import Counter

import httpx

from courier.errors import PublishOutcomeUnknownError, TransportUnavailableError
from courier.gateway import NatsSink, create_app
from courier.model import bucket_start


class FlakySink(NatsSink):
    """Fails the next publishes: 'down' stores nothing, 'lost_ack' stores and then times out."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.plan: list[str] = []

    async def publish(self, event_type, body, *, msg_id, headers) -> None:
        mode = self.plan.pop(0) if self.plan and event_type == "PlaySong" else None
        if mode == "down":
            raise TransportUnavailableError("injected: transport down")
        await super().publish(event_type, body, msg_id=msg_id, headers=headers)
        if mode == "lost_ack":
            raise PublishOutcomeUnknownError("injected: the ack never came back")


def _events(prefix: str, n: int) -> list[dict[str, object]]:
    return [
        {"type": "PlaySong", "id": f"{prefix}{i}", "data": {"track_id": "t", "ms_played": i}}
        for i in range(n)
    ]


async def test_retries_after_503_and_after_a_lost_ack_are_delivered_once(pipeline):
    sink = FlakySink(pipeline.transport, 5.0)
    app = create_app(pipeline.settings, sink=sink, registry=pipeline.registry)
    a, b, c = _events("a", 20), _events("b", 20), _events("c", 5)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        sink.plan = ["down", "lost_ack"]
        first = await client.post("/v1/events", json={"events": a})
        assert first.status_code == 503 and "Retry-After" in first.headers
        second = await client.post("/v1/events", json={"events": a})  # stored, ack lost
        assert second.status_code == 503
        # The client retries again, its batch now merged with newer events (another message id).
        third = await client.post("/v1/events", json={"events": a + b})
        assert third.status_code == 200 and third.json()["accepted"] == 40
        # An identical retry inside the server's duplicate window adds no message at all.
        fourth = await client.post("/v1/events", json={"events": a + b})
        assert fourth.status_code == 200
        # Duplicates within one batch.
        fifth = await client.post("/v1/events", json={"events": c + c})
        assert fifth.status_code == 200
    last = bucket_start(time.time(), pipeline.settings.bucket_width_secs)
    pipeline.start_writer()
    await pipeline.start_closer()
    await pipeline.wait_until(lambda: pipeline.reader.manifest("PlaySong", last) is not None)
    ids = Counter(pipeline.reader.read("PlaySong", 0, time.time() + 10).column("id").to_pylist())
    assert ids.keys() == {e["id"] for e in a + b + c}
    assert set(ids.values()) == {1}
