"""A producer's Prometheus metrics: spool depth while the gateway is away, sent once it is back."""

from __future__ import annotations

import time

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from test_sdk_producer import FakeGateway

from courier.sdk import Producer, ProducerCollector


def _value(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name, {"producer": "app"})


def test_spool_depth_and_retries_show_while_the_gateway_is_down_then_drain(tmp_path):
    gateway = FakeGateway()
    gateway.up.clear()
    producer = Producer(
        spool_dir=tmp_path / "spool",
        transport=httpx.MockTransport(gateway.handler),
        backoff_max_secs=0.05,
    )
    registry = CollectorRegistry()
    registry.register(ProducerCollector(producer, name="app"))
    with producer:
        for i in range(10):
            producer.send("PlaySong", {"track_id": "t", "ms_played": i})
        deadline = time.monotonic() + 10
        while (_value(registry, "courier_producer_retries_total") or 0) < 2:
            assert time.monotonic() < deadline, "no retry counted while the gateway is down"
            time.sleep(0.02)
        assert _value(registry, "courier_producer_spool_events") == 10
        assert (_value(registry, "courier_producer_spool_bytes") or 0) > 0
        assert (_value(registry, "courier_producer_oldest_unsent_age_seconds") or 0) > 0
        assert _value(registry, "courier_producer_events_sent_total") == 0
        gateway.up.set()
        assert producer.flush(10)
        assert _value(registry, "courier_producer_events_sent_total") == 10
        assert _value(registry, "courier_producer_spool_events") == 0
        assert _value(registry, "courier_producer_oldest_unsent_age_seconds") == 0
    assert b"courier_producer_batches_total" in generate_latest(registry)
