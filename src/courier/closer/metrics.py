"""Typed closer telemetry (Prometheus), one registry per closer."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from courier.service.telemetry import consumer_pending_gauge


class CloserMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.closed = Counter(
            "courier_closer_buckets_closed_total", "Buckets closed", ["type"], registry=r
        )
        self.close_failures = Counter(
            "courier_closer_close_failures_total",
            "Close attempts that failed",
            ["type"],
            registry=r,
        )
        self.close_delay = Histogram(
            "courier_closer_close_delay_seconds",
            "Seconds between a bucket's end and its close decision",
            ["type"],
            buckets=(1, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 10800),
            registry=r,
        )
        self.duplicates_dropped = Counter(
            "courier_closer_duplicates_dropped_total",
            "Duplicate events removed",
            ["type"],
            registry=r,
        )
        self.oldest_unacked_age = Gauge(
            "courier_oldest_unacked_age_seconds",
            "Age of the oldest message the writer has not acked, per type",
            ["type"],
            registry=r,
        )
        self.pending = consumer_pending_gauge(r)
        self.watermark_lag = Gauge(
            "courier_watermark_lag_seconds", "Now minus the type's watermark", ["type"], registry=r
        )
