"""GatewayClient: what each gateway answer makes a producer do (unit tests over MockTransport)."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
import zstandard

from courier.sdk.delivery import (
    DeliveryPolicy,
    DeliveryStopped,
    GatewayClient,
    retry_after_secs,
)


def _events(n: int, poison: set[int] = frozenset()) -> list[bytes]:  # type: ignore[assignment]
    return [
        json.dumps({"type": "PlaySong", "id": f"e{i}", "poison": i in poison}).encode()
        for i in range(n)
    ]


def _decode(request: httpx.Request) -> list[dict[str, object]]:
    body = request.content
    if request.headers.get("content-encoding") == "zstd":
        body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
    return json.loads(body)["events"]


def _client(handler, **policy) -> GatewayClient:
    policy.setdefault("backoff_initial_secs", 0.001)
    policy.setdefault("backoff_max_secs", 0.002)
    return GatewayClient(DeliveryPolicy(**policy), transport=httpx.MockTransport(handler))


def test_a_2xx_returns_the_events_the_gateway_rejected_by_index():
    def handler(request: httpx.Request) -> httpx.Response:
        events = _decode(request)
        return httpx.Response(
            200,
            json={
                "accepted": len(events) - 1,
                "rejected": [{"index": 1, "id": "e1", "error": "Expected `int`"}],
            },
        )

    rejections = _client(handler).deliver(_events(3))
    assert [(r.index, r.reason, r.status) for r in rejections] == [(1, "Expected `int`", 200)]


def test_503_and_connection_errors_are_retried_until_the_gateway_accepts():
    answers = iter(["refused", 503, 500, "timeout", 200])
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        a = next(answers)
        seen.append(len(_decode(request)))
        if a == "refused":
            raise httpx.ConnectError("down", request=request)
        if a == "timeout":
            raise httpx.ReadTimeout("slow", request=request)
        assert isinstance(a, int)
        return httpx.Response(a, json={"accepted": 5, "rejected": []}, headers={"Retry-After": "0"})

    retries: list[str] = []
    client = GatewayClient(
        DeliveryPolicy(backoff_initial_secs=0.001, backoff_max_secs=0.002),
        transport=httpx.MockTransport(handler),
        on_retry=retries.append,
    )
    assert client.deliver(_events(5)) == []
    assert seen == [5, 5, 5, 5, 5], "the same whole batch is sent again each time"
    assert len(retries) == 4


def test_auth_failures_are_retried_not_turned_into_rejections():
    answers = iter([401, 403, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers), json={"accepted": 1, "rejected": []})

    assert _client(handler).deliver(_events(1)) == []


def test_a_poison_event_is_isolated_by_bisection_and_the_rest_is_delivered():
    delivered: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        events = _decode(request)
        if any(e["poison"] for e in events):
            return httpx.Response(400, json={"error": "request body is not valid JSON"})
        delivered.extend(str(e["id"]) for e in events)
        return httpx.Response(200, json={"accepted": len(events), "rejected": []})

    rejections = _client(handler).deliver(_events(9, poison={5}))
    assert [r.index for r in rejections] == [5]
    assert rejections[0].status == 400 and "not valid JSON" in rejections[0].reason
    assert sorted(delivered) == sorted(f"e{i}" for i in range(9) if i != 5)


def test_a_415_drops_compression_before_giving_up_on_a_batch():
    encodings: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        encodings.append(request.headers.get("content-encoding"))
        if request.headers.get("content-encoding"):
            return httpx.Response(415, json={"error": "zstd not supported"})
        return httpx.Response(200, json={"accepted": 2, "rejected": []})

    assert _client(handler).deliver(_events(2)) == []
    assert encodings == ["zstd", None]


def test_gzip_bodies_decode_to_the_same_batch():
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        import gzip

        bodies.append(gzip.decompress(request.content))
        return httpx.Response(200, json={"accepted": 2, "rejected": []})

    _client(handler, compression="gzip").deliver(_events(2))
    doc = json.loads(bodies[0])
    assert [e["id"] for e in doc["events"]] == ["e0", "e1"] and doc["sent_at"].endswith("Z")


def test_stopping_interrupts_the_retry_wait_and_delivers_nothing():
    stop = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        stop.set()
        return httpx.Response(503, headers={"Retry-After": "60"})

    client = GatewayClient(DeliveryPolicy(), stop=stop, transport=httpx.MockTransport(handler))
    with pytest.raises(DeliveryStopped):
        client.deliver(_events(1))


@pytest.mark.parametrize(
    ("header", "secs"), [("3", 3.0), ("0.5", 0.5), ("-1", 0.0), ("soon", None), (None, None)]
)
def test_retry_after_is_read_as_seconds(header, secs):
    assert retry_after_secs(header) == secs
