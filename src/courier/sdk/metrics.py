"""Prometheus metrics of a producer, read from its ``stats()`` at scrape time.

The SDK is a library: it registers nothing by itself and costs nothing on the
send path. An application that serves Prometheus metrics registers a collector::

    from prometheus_client import REGISTRY
    from courier.sdk import Producer, ProducerCollector

    producer = Producer(spool_dir="/var/spool/myapp", gateway_url="http://gateway:8080")
    REGISTRY.register(ProducerCollector(producer, name="myapp"))

``courier tail --metrics-port`` serves the tailer's (courier/tailer/metrics.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from courier.sdk.producer import ProducerStats


class _HasProducerStats(Protocol):
    def stats(self) -> ProducerStats: ...


class ProducerCollector(Collector):
    """``courier_producer_*`` metrics of one :class:`Producer` or :class:`AsyncProducer`,
    labelled ``producer=<name>`` (several producers can share one registry)."""

    def __init__(self, producer: _HasProducerStats, name: str = "default") -> None:
        self._producer = producer
        self._name = name

    def collect(self) -> Iterator[Metric]:
        s = self._producer.stats()
        gauges = (
            (
                "courier_producer_spool_events",
                "Events in the spool not yet acknowledged.",
                s.spool_records,
            ),
            (
                "courier_producer_spool_bytes",
                "Bytes of events in the spool not yet acknowledged.",
                s.spool_bytes,
            ),
            (
                "courier_producer_spool_disk_bytes",
                "Bytes the spool's segment files take on disk.",
                s.spool_disk_bytes,
            ),
            (
                "courier_producer_oldest_unsent_age_seconds",
                "Age of the oldest event the gateway has not acknowledged (0 when none).",
                s.oldest_unsent_age_secs,
            ),
        )
        counters = (
            ("courier_producer_events_sent", "Events the gateway acknowledged.", s.sent),
            (
                "courier_producer_events_rejected",
                "Events the gateway rejected (final).",
                s.rejected,
            ),
            (
                "courier_producer_retries",
                "Delivery attempts retried (503, 429, timeouts).",
                s.retries,
            ),
            ("courier_producer_batches", "Batches the gateway answered.", s.batches),
        )
        yield from families(gauges, counters, "producer", self._name)


def families(
    gauges: tuple[tuple[str, str, float], ...],
    counters: tuple[tuple[str, str, float], ...],
    label: str,
    value: str,
) -> Iterator[Metric]:
    """Gauge and counter families of one labelled instance, from (name, help, value)."""
    for name, doc, v in gauges:
        g = GaugeMetricFamily(name, doc, labels=[label])
        g.add_metric([value], v)
        yield g
    for name, doc, v in counters:
        c = CounterMetricFamily(name, doc, labels=[label])
        c.add_metric([value], v)
        yield c
