"""Through the real pipeline: a batch's valid events are delivered, its invalid ones land in
``_invalid`` with their reason (G6), also when the batch came with an API key."""

from __future__ import annotations

import json
import time

import httpx

from courier.gateway import create_app
from courier.model import INVALID_TYPE, bucket_start
from courier.service.auth import hash_key, new_key
from courier.settings import Settings


async def test_valid_events_of_a_mixed_batch_are_delivered_and_invalid_ones_kept_with_reason(
    pipeline,
):
    key = new_key()
    auth = {"keys": [{"name": "app", "sha256": hash_key(key), "types": ["PlaySong", "Search"]}]}
    settings = Settings(**{**pipeline.settings.model_dump(), "auth": auth})
    events = [
        {"type": "PlaySong", "id": "ok-1", "data": {"track_id": "t1", "ms_played": 1}},
        {"type": "PlaySong", "id": "bad-type", "data": {"track_id": "t2", "ms_played": "x"}},
        {"type": "Search", "id": "ok-2", "data": {"query": "q", "results": 3}},
        {"type": "Search", "id": "bad-field", "data": {"query": "q", "results": 1, "who": 1}},
    ]
    not_utf8 = b'{"type":"PlaySong","data":{"track_id":"\xff","ms_played":1}}'
    body = json.dumps({"events": events}).encode()[:-2] + b"," + not_utf8 + b"]}"
    app = create_app(settings, registry=pipeline.registry)  # the real NATS sink
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        r = await client.post(
            "/v1/events",
            content=body,
            headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
        )
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2
    assert [x["index"] for x in r.json()["rejected"]] == [1, 3, 4]

    last = bucket_start(time.time(), pipeline.settings.bucket_width_secs)
    pipeline.start_writer()
    await pipeline.start_closer()
    reader = pipeline.reader
    await pipeline.wait_until(
        lambda: all(reader.manifest(t, last) for t in ("PlaySong", "Search", INVALID_TYPE))
    )
    until = time.time() + 10
    delivered = {
        t: reader.read(t, 0, until).column("id").to_pylist() for t in ("PlaySong", "Search")
    }
    assert delivered == {"PlaySong": ["ok-1"], "Search": ["ok-2"]}
    invalid = reader.read(INVALID_TYPE, 0, until).to_pylist()
    by_index = {row["index"]: row for row in invalid}
    assert sorted(by_index) == [1, 3, 4]
    assert by_index[1]["id"] == "bad-type" and "ms_played" in by_index[1]["error"]
    assert by_index[3]["event_type"] == "Search" and "who" in by_index[3]["error"]
    assert by_index[4]["error"] and by_index[4]["raw"].startswith('{"type":"PlaySong"')
