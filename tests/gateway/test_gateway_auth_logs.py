"""Nothing the gateway logs carries an API key or an event's payload."""

from __future__ import annotations

import json
import logging

from courier.service.auth import hash_key, new_key

PAYLOAD_MARK = "payload-secret-7f3a9c"


async def test_gateway_auth_logs_hold_no_key_and_no_payload(start_gateway, sink, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, every level
    player, stranger, admin = new_key(), new_key(), new_key()
    gw = await start_gateway(
        auth={
            "keys": [
                {"name": "player", "sha256": hash_key(player), "types": ["PlaySong"]},
                {
                    "name": "limited",
                    "sha256": hash_key(stranger[::-1]),
                    "events_per_sec": 1,
                    "burst_events": 1,
                },
            ],
            "admin_key_sha256": hash_key(admin),
        },
        max_body_bytes=4096,
    )
    good = {"type": "PlaySong", "id": "p1", "data": {"track_id": PAYLOAD_MARK, "ms_played": 1}}
    wrong = {"type": "PlaySong", "data": {"track_id": PAYLOAD_MARK, "ms_played": PAYLOAD_MARK}}
    other = {"type": "Search", "data": {"query": PAYLOAD_MARK, "results": 1}}
    unknown = {"type": "Nope", "data": {"x": PAYLOAD_MARK}}

    def body(*events: object) -> bytes:
        return json.dumps({"events": list(events)}).encode()

    answers = [
        await gw.post(body(good)),  # no key: 401
        await gw.post(body(good), authorization=f"Bearer {stranger}"),  # unknown: 401
        await gw.post(body(good, other), x_api_key=player),  # forbidden type: 403
        await gw.post(body(good, wrong, {"data": PAYLOAD_MARK}), x_api_key=player),  # rejections
        await gw.post(body(unknown), x_api_key=admin),  # unknown type, rejected
        await gw.post(body(good) * 2, x_api_key=player),  # malformed: 400
        await gw.post(body(good) + PAYLOAD_MARK.encode() * 500, x_api_key=player),  # 413
        await gw.post(b"\xff" + PAYLOAD_MARK.encode(), x_api_key=player),  # invalid UTF-8: 400
        await gw.post(body(good), x_api_key=stranger[::-1]),  # rate: 1st passes
        await gw.post(body(good), x_api_key=stranger[::-1]),  # rate: 429
        await gw.client.put(
            "/v1/schemas/Clicked",
            json={"schema": {"name": PAYLOAD_MARK}},
            headers={"x-api-key": player},
        ),  # not admin: 403
        await gw.client.put(
            "/v1/schemas/Clicked",
            json={"schema": {"name": PAYLOAD_MARK}},
            headers={"x-api-key": admin},
        ),  # bad schema: 400
    ]
    assert [a.status_code for a in answers] == [
        401, 401, 403, 200, 200, 400, 413, 400, 200, 429, 403, 400
    ]  # fmt: skip
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert logged, "the test should capture something (start-up lines at least)"
    for secret in (player, stranger, admin, stranger[::-1], PAYLOAD_MARK):
        assert secret not in logged
