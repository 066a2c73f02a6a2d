"""Per-key rate limits: 429 with Retry-After, nothing accepted, and buckets that refill."""

from __future__ import annotations

import json
from typing import Any

import pytest

from courier.errors import RateLimitedError
from courier.gateway.ratelimit import RateLimiter
from courier.service.auth import Principal, hash_key, new_key

SLOW_KEY = new_key()
FAST_KEY = new_key()
AUTH: dict[str, Any] = {
    "keys": [
        {"name": "slow", "sha256": hash_key(SLOW_KEY), "events_per_sec": 10, "burst_events": 20},
        {"name": "fast", "sha256": hash_key(FAST_KEY)},
    ],
    "events_per_sec": 1000,
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plays(n: int, prefix: str = "p") -> bytes:
    events = [
        {"type": "PlaySong", "id": f"{prefix}{i}", "data": {"track_id": "t", "ms_played": i}}
        for i in range(n)
    ]
    return json.dumps({"events": events}).encode()


@pytest.fixture
async def limited(start_gateway):
    gw = await start_gateway(auth=AUTH)
    clock = FakeClock()
    gw.app.state.gateway.limiter = RateLimiter(clock=clock)
    return gw, clock


async def test_gateway_auth_a_key_over_its_rate_gets_429_with_retry_after_and_nothing_stored(
    limited, sink
):
    gw, _ = limited
    assert (await gw.post(plays(20, "a"), x_api_key=SLOW_KEY)).json()["accepted"] == 20
    r = await gw.post(plays(5, "b"), x_api_key=SLOW_KEY)
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "1"  # 5 events at 10/s
    assert "rate limit of 10 events/s" in r.json()["error"]
    assert "nothing was accepted" in r.json()["error"]
    assert len(sink.events_of("PlaySong")) == 20


async def test_gateway_auth_the_rate_limit_refills_with_time(limited):
    gw, clock = limited
    await gw.post(plays(20, "a"), x_api_key=SLOW_KEY)
    assert (await gw.post(plays(10, "b"), x_api_key=SLOW_KEY)).status_code == 429
    clock.now += 1.0  # 10 events back
    assert (await gw.post(plays(10, "b"), x_api_key=SLOW_KEY)).status_code == 200
    assert (await gw.post(plays(1, "c"), x_api_key=SLOW_KEY)).status_code == 429
    clock.now += 60.0  # refills only up to the burst
    assert (await gw.post(plays(20, "d"), x_api_key=SLOW_KEY)).status_code == 200
    assert (await gw.post(plays(1, "e"), x_api_key=SLOW_KEY)).status_code == 429


async def test_gateway_auth_each_key_has_its_own_bucket_and_the_default_rate(limited):
    gw, _ = limited
    await gw.post(plays(20, "a"), x_api_key=SLOW_KEY)
    assert (await gw.post(plays(1, "b"), x_api_key=SLOW_KEY)).status_code == 429
    r = await gw.post(plays(1000, "c"), x_api_key=FAST_KEY)  # default burst 20,000
    assert r.json()["accepted"] == 1000


async def test_gateway_auth_rejected_events_count_against_the_rate(limited):
    gw, _ = limited
    bad = json.dumps({"events": [{"type": "PlaySong", "data": {}}] * 20}).encode()
    r = await gw.post(bad, x_api_key=SLOW_KEY)
    assert len(r.json()["rejected"]) == 20
    assert (await gw.post(plays(1), x_api_key=SLOW_KEY)).status_code == 429


def test_gateway_auth_a_batch_larger_than_the_burst_passes_once_then_the_key_waits():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    key = Principal("k", None, False, events_per_sec=100, burst_events=50)
    limiter.charge(key, 200)  # needs only the full burst; leaves a debt of 150
    with pytest.raises(RateLimitedError) as info:
        limiter.check(key)
    assert info.value.retry_after_secs == 2  # 151 tokens at 100/s
    clock.now += 1.6
    limiter.check(key)


def test_gateway_auth_keys_without_a_rate_are_never_limited():
    limiter = RateLimiter(clock=FakeClock())
    key = Principal("k", None, False, events_per_sec=None, burst_events=1)
    for _ in range(100):
        limiter.charge(key, 10_000)
    limiter.check(key)
