"""Several gateways (one per DC): the SDK and the tailer fail over between them, in order.

Two real local HTTP servers stand in for the gateways of two DCs; each can answer,
answer 503/429, or be shut down (connection refused).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from courier.sdk import Producer
from courier.sdk.delivery import DeliveryPolicy, GatewayClient, gateway_urls
from fake_gateways import FakeGateway


@pytest.fixture
def gateways() -> Iterator[tuple[FakeGateway, FakeGateway]]:
    a, b = FakeGateway().start(), FakeGateway().start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def _events(*ids: str) -> list[bytes]:
    return [json.dumps({"type": "PlaySong", "id": i, "data": {}}).encode() for i in ids]


def _client(a: FakeGateway, b: FakeGateway, **policy: object) -> GatewayClient:
    policy.setdefault("backoff_initial_secs", 0.01)
    policy.setdefault("backoff_max_secs", 0.05)
    return GatewayClient(
        DeliveryPolicy(gateway_url=f"{a.url}, {b.url}/", **policy)  # type: ignore[arg-type]
    )


def test_gateway_urls_are_split_on_commas_in_order():
    assert gateway_urls(" http://a:1/, http://b:2 ") == ["http://a:1", "http://b:2"]
    with pytest.raises(ValueError):
        gateway_urls(" , ")


def test_batches_go_to_the_first_gateway_while_it_answers(gateways):
    a, b = gateways
    client = _client(a, b)
    client.deliver(_events("e1"))
    client.deliver(_events("e2"))
    assert (a.ids, b.ids) == (["e1", "e2"], [])


def test_a_dead_first_gateway_fails_over_at_once_and_stays_on_the_second(gateways):
    a, b = gateways
    a.stop()
    client = _client(a, b, backoff_initial_secs=5.0, backoff_max_secs=5.0)
    start = time.monotonic()
    client.deliver(_events("e1"))
    client.deliver(_events("e2"))
    assert time.monotonic() - start < 2.0, "failing over must not wait for the backoff"
    assert b.ids == ["e1", "e2"] and client.gateway_url == b.url


def test_a_503_fails_over_but_a_429_waits_on_the_same_gateway(gateways):
    a, b = gateways
    a.status, a.retry_after = 503, "30"
    client = _client(a, b)
    client.deliver(_events("e1"))
    assert b.ids == ["e1"]

    b.status, b.retry_after = 429, "0"
    retries: list[str] = []
    client = GatewayClient(
        DeliveryPolicy(gateway_url=f"{b.url},{a.url}", backoff_initial_secs=0.01),
        on_retry=retries.append,
    )

    def recover() -> None:
        time.sleep(0.3)
        b.status = 200

    threading.Thread(target=recover).start()
    client.deliver(_events("e2"))
    assert b.ids == ["e1", "e2"] and a.requests == 1, "a 429 is not an outage"
    assert retries and all("429" in r for r in retries)


def test_when_every_gateway_fails_it_backs_off_per_round_and_delivers_once_one_returns(
    gateways,
):
    a, b = gateways
    a.stop()
    b.status = 503
    retries: list[str] = []
    client = GatewayClient(
        DeliveryPolicy(
            gateway_url=f"{a.url},{b.url}", backoff_initial_secs=0.05, backoff_max_secs=0.1
        ),
        on_retry=retries.append,
    )

    def recover() -> None:
        time.sleep(0.5)
        b.status = 200

    threading.Thread(target=recover).start()
    client.deliver(_events("e1"))
    assert b.ids == ["e1"]
    # ~0.5 s of outage at <= 0.1 s per round: a bounded number of requests, not a busy loop.
    assert 2 <= b.requests <= 20


def test_after_failback_secs_the_next_batch_tries_the_first_gateway_again(gateways):
    a, b = gateways
    a.status = 503
    client = _client(a, b, failback_secs=1.5)  # room for two requests on a busy machine
    client.deliver(_events("e1"))
    assert client.gateway_url == b.url
    a.status = 200
    client.deliver(_events("e2"))  # too early: stays on b
    time.sleep(1.6)
    client.deliver(_events("e3"))
    assert (a.ids, b.ids) == (["e3"], ["e1", "e2"])
    assert client.gateway_url == a.url


def test_a_producer_fails_over_to_the_other_dc_and_loses_nothing(gateways, tmp_path: Path):
    a, b = gateways
    ids = [f"id-{i}" for i in range(300)]
    with Producer(
        spool_dir=tmp_path / "spool",
        gateway_url=f"{a.url},{b.url}",
        backoff_initial_secs=0.01,
        backoff_max_secs=0.05,
        batch_max_events=50,
    ) as p:
        for i in ids[:100]:
            p.send("PlaySong", {}, id=i)
        deadline = time.monotonic() + 30
        while len(a.ids) < 100:
            assert time.monotonic() < deadline, "the first gateway never got the first 100"
            time.sleep(0.05)
        a.stop()  # DC-A's gateway goes away mid-run
        for i in ids[100:]:
            p.send("PlaySong", {}, id=i)
        deadline = time.monotonic() + 30
        while len(set(a.ids) | set(b.ids)) < len(ids):
            assert time.monotonic() < deadline, "events were not delivered after failover"
            time.sleep(0.05)
    assert set(a.ids) | set(b.ids) == set(ids)
    assert len(b.ids) >= 200
