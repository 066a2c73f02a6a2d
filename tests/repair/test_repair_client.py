"""The repair client sizes its requests by the gateway's limits, not this host's settings."""

from __future__ import annotations

import json

import httpx

from courier.repair.client import RepairClient, replay_invalid


def _gateway(max_events: int, bodies: list[dict[str, object]]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/openapi.json":
            limits = {"max_body_bytes": 1 << 20, "max_events_per_batch": max_events}
            return httpx.Response(200, json={"info": {"x-courier-limits": limits}})
        body = json.loads(request.content)
        bodies.append(body)
        rejected = [{"error": "still bad"} for e in body["events"] if e.get("bad")]
        counts = {"accepted": len(body["events"]) - len(rejected)}
        return httpx.Response(200, json={"counts": counts, "rejected": rejected})

    return httpx.MockTransport(handle)


def test_rejected_events_are_resent_in_batches_the_gateway_accepts():
    bodies: list[dict[str, object]] = []
    raws = [json.dumps({"id": f"e{i}", "bad": i == 3}) for i in range(5)]
    raws += ['{"no id": true}', "not json", "[1, 2]"]
    with RepairClient("http://gw", None, transport=_gateway(2, bodies)) as client:
        done = replay_invalid(client, raws, "PlaySong", 0, 3600)

    assert [len(b["events"]) for b in bodies] == [2, 2, 2]  # type: ignore[arg-type]
    assert all(b["from_time"] == "1970-01-01T00:00:00.000Z" for b in bodies)
    assert (done.found, done.accepted, done.without_id) == (8, 5, 1)
    assert done.reasons == {"still bad": 1, "the stored raw text is not a JSON object": 2}
    assert done.still_rejected == 3
