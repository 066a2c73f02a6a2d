"""The Segment-compatible routes over MemorySink: mapping, per-call rejections, auth, answers."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from courier.errors import TransportUnavailableError
from courier.examples import SCHEMAS_DIR
from courier.gateway import MemorySink, create_app
from courier.gateway.ingest import Validator
from courier.gateway.segment import CALL_TYPES, write_key
from courier.gateway.segment import SCHEMAS_DIR as SEGMENT_SCHEMAS
from courier.gateway.segment.mapping import Translator, parse
from courier.schema import Registry, compile_type, load_definitions
from courier.service.auth import KeyRing, hash_key
from courier.settings import AuthSettings, SegmentSettings, load_settings
from courier.transport.kv import MemoryKeyValue

KEY = "ck_segment-writer"
TRACK_ONLY = "ck_song-only"
STRICT = "ck_strict-plan"
SONG_PLAN = SCHEMAS_DIR.parent / "segment"
_VALIDATOR = Validator(
    {
        d.name: compile_type(d.name, d.avro, 1, d.settings)
        for d in [*load_definitions(SEGMENT_SCHEMAS), *load_definitions(SONG_PLAN)]
    },
    load_settings().gateway,
)


def basic(key: str) -> dict[str, str]:
    """What Segment's libraries send: HTTP Basic with the write key as the user name."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def call(kind: str, i: int, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": kind,
        "messageId": f"{kind}-{i}",
        "timestamp": "2026-11-26T10:14:59.001Z",
        "userId": f"u{i}",
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
        "integrations": {},
    }
    body.update(fields)
    return body


def song(i: int, **properties: Any) -> dict[str, Any]:
    props: dict[str, Any] = {"song_id": f"s{i}", "ms_played": 1000 + i}
    props.update(properties)
    return call("track", i, event="Song Played", properties=props)


def stored(sink: MemorySink, event_type: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in sink.events_of(event_type)]


@pytest.fixture
async def registry() -> Registry:
    reg = Registry(MemoryKeyValue())
    defs = [*load_definitions(SEGMENT_SCHEMAS), *load_definitions(SONG_PLAN)]
    await reg.apply(defs)
    return reg


@pytest.fixture
async def segment(
    tmp_path: Path, sink: MemorySink, registry: Registry
) -> AsyncIterator[Callable[..., Any]]:
    """Start a gateway with Segment settings; returns an httpx client."""
    stack: list[Any] = []

    async def _start(**overrides: Any) -> httpx.AsyncClient:
        settings = load_settings(
            data_dir=tmp_path / "data",
            segment={
                "tracking_plan": {"Song Played": "SongPlayed"},
                "unplanned_track_by_key": {"strict": "reject"},
                **overrides.pop("segment", {}),
            },
            auth={
                "keys": [
                    {"name": "web", "sha256": hash_key(KEY)},
                    {"name": "songs", "sha256": hash_key(TRACK_ONLY), "types": ["SongPlayed"]},
                    {"name": "strict", "sha256": hash_key(STRICT)},
                ],
                **overrides.pop("auth", {}),
            },
            **overrides,
        )
        app = create_app(settings, sink=sink, registry=registry)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        stack.append(lifespan)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
        stack.append(client)
        return client

    yield _start
    for resource in reversed(stack):
        await resource.__aexit__(None, None, None)


async def test_a_batch_of_every_call_type_lands_in_its_types_with_segment_fields_mapped(
    segment, sink
):
    client = await segment()
    batch = [
        call("identify", 1, traits={"email": "a@example.com"}),
        song(2),
        call("track", 3, event="Button Clicked", properties={"button": "buy"}),
        call("page", 4, name="Home", properties={"path": "/"}),
        call("screen", 5, name="Player", anonymousId="anon-5", userId=None),
        call("group", 6, groupId="g1", traits={"plan": "pro"}),
        call("alias", 7, previousId="anon-7"),
    ]
    r = await client.post(
        "/v1/batch",
        json={"batch": batch, "sentAt": "2026-11-26T10:15:02Z", "writeKey": KEY},
        headers=basic(KEY),
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True, "accepted": 7, "rejected": []}
    (identify,) = stored(sink, "SegmentIdentify")
    assert identify["id"] == "identify-1"
    assert identify["time"].startswith("2026-11-26T10:14:59.001")
    assert identify["sent_at"].startswith("2026-11-26T10:15:02")
    assert identify["data"]["user_id"] == "u1"
    assert json.loads(identify["data"]["traits"]) == {"email": "a@example.com"}
    assert json.loads(identify["data"]["context"])["library"]["name"] == "analytics-python"
    (played,) = stored(sink, "SongPlayed")
    assert played["data"]["properties"] == {"song_id": "s2", "ms_played": 1002, "shuffle": False}
    (unplanned,) = stored(sink, "SegmentTrack")
    assert unplanned["data"]["event"] == "Button Clicked"
    assert json.loads(unplanned["data"]["properties"]) == {"button": "buy"}
    (page,) = stored(sink, "SegmentPage")
    assert page["data"]["name"] == "Home"
    (screen,) = stored(sink, "SegmentScreen")
    assert screen["data"]["anonymous_id"] == "anon-5" and screen["data"]["user_id"] is None
    (group,) = stored(sink, "SegmentGroup")
    assert group["data"]["group_id"] == "g1"
    (alias,) = stored(sink, "SegmentAlias")
    assert alias["data"]["previous_id"] == "anon-7"


async def test_an_invalid_call_is_kept_in_invalid_with_its_reason_and_the_batch_answers_200(
    segment, sink
):
    client = await segment()
    bad_song = song(2, ms_played="long")
    no_user = call("track", 3, event="Clicked", userId=None)
    r = await client.post(
        "/v1/batch", json={"batch": [song(1), bad_song, no_user, song(4)]}, headers=basic(KEY)
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["accepted"] == 2
    assert [(x["index"], x["id"]) for x in answer["rejected"]] == [(1, "track-2"), (2, "track-3")]
    assert "$.properties.ms_played" in answer["rejected"][0]["error"]
    assert "userId" in answer["rejected"][1]["error"]
    invalid = stored(sink, "_invalid")
    assert [e["data"]["index"] for e in invalid] == [1, 2]
    assert json.loads(invalid[0]["data"]["raw"]) == bad_song  # what the client sent
    assert invalid[0]["data"]["event_type"] == "SongPlayed"
    metrics = (await client.get("/metrics")).text
    assert (
        'courier_gateway_events_rejected_total{reason="invalid",type="SongPlayed"} 1.0' in metrics
    )


async def test_unplanned_track_events_follow_the_keys_policy_never_dropped(segment, sink):
    client = await segment()
    unplanned = call("track", 1, event="Unplanned Thing", properties={"a": 1})
    r = await client.post("/v1/batch", json={"batch": [unplanned, song(2)]}, headers=basic(STRICT))
    assert r.status_code == 200
    (rejected,) = r.json()["rejected"]
    assert "not in the tracking plan" in rejected["error"]
    assert [e["data"]["error"] for e in stored(sink, "_invalid")] == [rejected["error"]]
    assert len(stored(sink, "SongPlayed")) == 1
    metrics = (await client.get("/metrics")).text
    assert 'reason="unknown_type",type="_unknown"} 1.0' in metrics


async def test_a_type_the_key_may_not_send_goes_to_invalid_and_the_rest_is_stored(segment, sink):
    client = await segment()
    r = await client.post(
        "/v1/batch",
        json={"batch": [song(1), call("identify", 2)]},
        headers=basic(TRACK_ONLY),
    )
    assert r.status_code == 200
    (rejected,) = r.json()["rejected"]
    assert (
        rejected["index"] == 1 and "may not send event type 'SegmentIdentify'" in rejected["error"]
    )
    assert len(stored(sink, "SongPlayed")) == 1
    assert stored(sink, "_invalid")[0]["data"]["event_type"] == "SegmentIdentify"
    metrics = (await client.get("/metrics")).text
    assert 'reason="forbidden",type="SegmentIdentify"} 1.0' in metrics


async def test_the_write_key_works_as_basic_bearer_or_in_the_body_and_nothing_else(segment, sink):
    client = await segment()
    one = {"batch": [song(1)]}
    assert (await client.post("/v1/batch", json=one, headers=basic(KEY))).status_code == 200
    bearer = {"Authorization": f"Bearer {KEY}"}
    two = {"batch": [song(2)]}
    assert (await client.post("/v1/batch", json=two, headers=bearer)).status_code == 200
    in_body = {"batch": [song(3)], "writeKey": KEY}
    assert (await client.post("/v1/batch", json=in_body)).status_code == 200
    missing = await client.post("/v1/batch", json=one)
    assert missing.status_code == 401 and "write key" in missing.json()["error"]
    wrong = await client.post("/v1/batch", json=one, headers=basic("ck_not-a-key"))
    assert wrong.status_code == 401
    assert len(stored(sink, "SongPlayed")) == 3


async def test_analytics_js_short_paths_take_text_plain_and_answer_with_cors(segment, sink):
    client = await segment()
    body = {**call("page", 1, name="Home"), "writeKey": KEY, "sentAt": "2026-11-26T10:15:02Z"}
    r = await client.post("/v1/p", content=json.dumps(body), headers={"Content-Type": "text/plain"})
    assert r.status_code == 200, r.text
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    (page,) = stored(sink, "SegmentPage")
    assert page["sent_at"].startswith("2026-11-26T10:15:02")
    batch = {"batch": [song(2), call("identify", 3)], "writeKey": KEY}
    r = await client.post(
        "/v1/b", content=json.dumps(batch), headers={"Content-Type": "text/plain"}
    )
    assert r.json()["accepted"] == 2
    preflight = await client.options("/v1/t")
    assert (
        preflight.status_code == 204 and "POST" in preflight.headers["Access-Control-Allow-Methods"]
    )


async def test_a_single_call_route_takes_its_type_from_the_path(segment, sink):
    client = await segment()
    body = song(1)
    del body["type"]
    r = await client.post("/v1/track", json=body, headers=basic(KEY))
    assert r.status_code == 200 and r.json()["accepted"] == 1
    r = await client.post("/v1/identify", json=call("identify", 2), headers=basic(KEY))
    assert r.status_code == 200 and len(stored(sink, "SegmentIdentify")) == 1


async def test_gzip_bodies_are_accepted(segment, sink):
    client = await segment()
    body = gzip.compress(json.dumps({"batch": [song(1), song(2)]}).encode())
    headers = {**basic(KEY), "Content-Type": "application/json", "Content-Encoding": "gzip"}
    r = await client.post("/v1/batch", content=body, headers=headers)
    assert r.status_code == 200 and r.json()["accepted"] == 2


async def test_malformed_or_oversized_bodies_are_refused_whole(segment, sink):
    client = await segment(gateway={"max_body_bytes": 10_000, "max_events_per_batch": 5})
    headers = {**basic(KEY), "Content-Type": "application/json"}
    assert (
        await client.post("/v1/batch", content=b"{not json", headers=headers)
    ).status_code == 400
    no_batch = await client.post("/v1/batch", json={"events": []}, headers=headers)
    assert no_batch.status_code == 400
    big = {"batch": [song(1, padding="x" * 20_000)]}
    assert (await client.post("/v1/batch", json=big, headers=headers)).status_code == 413
    many = {"batch": [song(i) for i in range(6)]}
    assert (await client.post("/v1/batch", json=many, headers=headers)).status_code == 413
    xml = await client.post(
        "/v1/batch", content=b"<a/>", headers={**basic(KEY), "Content-Type": "text/xml"}
    )
    assert xml.status_code == 415
    assert sink.messages == []


async def test_a_call_over_the_event_limit_is_rejected_alone(segment, sink):
    client = await segment(gateway={"max_event_bytes": 2_000})
    r = await client.post(
        "/v1/batch", json={"batch": [song(1), song(2, padding="x" * 3_000)]}, headers=basic(KEY)
    )
    assert r.status_code == 200
    assert r.json()["accepted"] == 1 and "more than the limit" in r.json()["rejected"][0]["error"]


async def test_a_down_transport_or_a_rate_limit_answers_with_retry_after(segment, sink):
    client = await segment(auth={"events_per_sec": 1, "burst_events": 2})
    sink.fail_with = TransportUnavailableError("injected: transport down")
    down = await client.post("/v1/batch", json={"batch": [song(1)]}, headers=basic(STRICT))
    assert down.status_code == 503 and down.headers["Retry-After"]
    sink.fail_with = None
    three = {"batch": [song(1), song(2), song(3)]}
    assert (await client.post("/v1/batch", json=three, headers=basic(KEY))).status_code == 200
    limited = await client.post("/v1/batch", json=three, headers=basic(KEY))
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["X-RateLimit-Reset"] == limited.headers["Retry-After"]


async def test_a_bad_sent_at_rejects_the_calls_into_invalid_not_the_request(segment, sink):
    client = await segment()
    body = {"batch": [song(1)], "sentAt": "yesterday"}
    r = await client.post("/v1/batch", json=body, headers=basic(KEY))
    assert r.status_code == 200 and r.json()["accepted"] == 0
    assert "sentAt" in r.json()["rejected"][0]["error"]
    assert len(stored(sink, "_invalid")) == 1


async def test_each_malformed_call_is_rejected_alone_with_a_reason_naming_the_segment_field(
    segment, sink
):
    client = await segment()
    calls = [
        call("identify", 0, userId=42),  # numbers are ids too: stored as text
        call("alias", 1),  # no previousId
        call("group", 2),  # no groupId
        call("identify", 3, context="not an object"),
        call("identify", 4, timestamp="2026-11-26T10:14:59"),  # no time zone
        call("identify", 5, messageId="m" * 200),
        call("fly", 6),
        "not an object",
        song(8, extra_field=1),
    ]
    r = await client.post("/v1/batch", json={"batch": calls}, headers=basic(KEY))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["accepted"] == 1
    errors = {x["index"]: x["error"] for x in answer["rejected"]}
    assert sorted(errors) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert "previousId" in errors[1]
    assert "groupId" in errors[2]
    assert "`context` must be an object" in errors[3]
    assert "$.timestamp" in errors[4]
    assert "$.messageId" in errors[5]
    assert "unknown Segment call type 'fly'" in errors[6]
    assert "not a Segment call" in errors[7]
    assert "unknown field `extra_field`" in errors[8] and "$.properties" in errors[8]
    (identify,) = stored(sink, "SegmentIdentify")
    assert identify["data"]["user_id"] == "42"
    assert len(stored(sink, "_invalid")) == 8


async def test_a_retried_batch_keeps_its_message_ids_so_the_copy_is_deduplicated(segment, sink):
    client = await segment()
    body = {"batch": [song(1), call("identify", 2)], "sentAt": "2026-11-26T10:15:02Z"}
    assert (await client.post("/v1/batch", json=body, headers=basic(KEY))).status_code == 200
    # The client retries with a new sentAt and X-Retry-Count; the ids stay.
    retry = {**body, "sentAt": "2026-11-26T10:15:09Z"}
    headers = {**basic(KEY), "X-Retry-Count": "1"}
    assert (await client.post("/v1/batch", json=retry, headers=headers)).status_code == 200
    ids = [e["id"] for e in stored(sink, "SongPlayed")] + [
        e["id"] for e in stored(sink, "SegmentIdentify")
    ]
    # The same ids make the same message id: the transport's duplicate window drops the copy
    # (and past the window, the closer keeps one copy per id).
    assert ids == ["track-1", "identify-2"] and sink.duplicates == 2


def test_the_write_key_is_the_basic_user_name_or_password_or_a_bearer_or_api_key_header():
    assert write_key({"authorization": basic(KEY)["Authorization"]}) == KEY
    as_password = base64.b64encode(f":{KEY}".encode()).decode()
    assert write_key({"authorization": f"Basic {as_password}"}) == KEY
    assert write_key({"authorization": f"Bearer {KEY}"}) == KEY
    assert write_key({"x-api-key": KEY}) == KEY
    assert write_key({"authorization": "Basic not-base64!"}) is None
    assert write_key({}) is None


async def test_a_broken_emoji_or_invalid_utf8_rejects_only_its_call(segment, sink):
    client = await segment()
    good = json.dumps(song(1)).encode()
    surrogate = json.dumps(call("identify", 2, traits={"name": "x"})).replace('"x"', '"\\ud83d"')
    bad_utf8 = (
        json.dumps(call("identify", 3, context={"ip": "x"})).encode().replace(b'"x"', b'"\xff"')
    )
    body = b'{"batch": [' + b", ".join([good, surrogate.encode(), bad_utf8]) + b"]}"
    r = await client.post("/v1/batch", content=body, headers=basic(KEY))
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
    assert [x["index"] for x in r.json()["rejected"]] == [1, 2]
    assert len(stored(sink, "_invalid")) == 2


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"null",
        b'{"batch": {}}',
        b'{"batch": [1, "x", null, []]}',
        b'{"batch": [], "sentAt": "\xff"}',
        b'{"batch": [{"type": "track", "event": "Song Played", "userId": "u", "properties": '
        + b"[" * 100
        + b"]" * 100
        + b"}]}",
        b'{"batch": [{"type": "identify", "userId": 1e999, "messageId": 12}]}',
        b'{"batch": [{"type": "track", "event": "Song Played", "userId": "u", "properties": "\xff"}]}',
        b'{"writeKey": 5, "batch": []}',
        b"\xff\xfe",
    ],
)
async def test_odd_bodies_get_a_4xx_or_a_per_call_rejection_never_a_5xx(segment, body):
    client = await segment()
    for path in ("/v1/batch", "/v1/track", "/v1/t"):
        r = await client.post(path, content=body, headers=basic(KEY))
        assert r.status_code < 500, (path, body, r.text)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
_CALL = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from([*CALL_TYPES, "fly"]) | _JSON,
        "event": st.sampled_from(["Song Played", "Other"]) | _JSON,
        "userId": st.text(max_size=5) | _JSON,
        "anonymousId": _JSON,
        "messageId": st.text(max_size=200) | _JSON,
        "timestamp": st.sampled_from(["2026-11-26T10:14:59Z", "2026-11-26T10:14:59"]) | _JSON,
        "context": _JSON,
        "properties": st.fixed_dictionaries({"song_id": _JSON, "ms_played": _JSON}) | _JSON,
        "traits": _JSON,
        "groupId": _JSON,
        "previousId": _JSON,
    },
)


@settings(max_examples=100, deadline=None, database=None)
@given(calls=st.lists(_CALL | _JSON, max_size=8), sent_at=_JSON)
def test_every_call_of_any_batch_is_accepted_or_rejected_with_its_index(calls, sent_at) -> None:
    limits = load_settings().gateway
    body = json.dumps({"batch": calls, "sentAt": sent_at}).encode()
    envelope = parse(body, None, limits)
    translator = Translator(
        SegmentSettings(tracking_plan={"Song Played": "SongPlayed"}),
        limits,
        KeyRing(AuthSettings()).anonymous,
    )
    batch = translator.translate(envelope, None, _VALIDATOR)
    assert batch.accepted + len(batch.rejections) == len(calls)
    assert sorted(r.index for r in batch.rejections) == sorted({r.index for r in batch.rejections})
