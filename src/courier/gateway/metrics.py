"""The gateway's Prometheus metrics, one registry per app.

With pre-forked workers (``gateway.workers`` > 1) a scrape of ``/metrics`` lands
on whichever worker accepts it, so the workers share their values through
prometheus_client's multi-process mode: :func:`share_across_workers` runs in the
parent before the fork (it is process-wide by nature: prometheus_client chooses
how values are stored when a metric is created), each worker writes its values to
memory-mapped files in that directory, and any worker's ``/metrics`` sums them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as _prometheus_values
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from courier.gateway.ingest import REJECT_REASONS, RejectReason

#: Why a publish failed; the ``reason`` label of the publish failure metric.
PublishFailure = Literal["unavailable", "timeout", "stream_full", "refused", "error"]
PUBLISH_FAILURES: tuple[PublishFailure, ...] = (
    "unavailable",
    "timeout",
    "stream_full",
    "refused",
    "error",
)
#: Label used for event types that are not registered (bounded label values).
UNKNOWN_TYPE_LABEL = "_unknown"
CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS_SECS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_EVENTS_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000)


#: prometheus_client reads this variable to find the shared directory.
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def share_across_workers(directory: Path) -> None:
    """Make metrics created from now on (in this process and its forks) store their
    values in ``directory``, so each worker's ``/metrics`` reports all workers.
    Call once, in the parent, before forking the workers."""
    os.environ[_MULTIPROC_ENV] = str(directory)
    _prometheus_values.ValueClass = _prometheus_values.MultiProcessValue()


class GatewayMetrics:
    """Typed telemetry of one gateway app; ``shared_dir`` when its workers share values."""

    def __init__(self, shared_dir: Path | None = None) -> None:
        self.shared_dir = shared_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.workers = Gauge(
            "courier_gateway_workers",
            "Gateway worker processes running (one per worker, summed over live workers).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.workers.set(1)
        self.accepted = Counter(
            "courier_gateway_events_accepted",
            "Events stored in the transport and acknowledged to the client.",
            ["type"],
            registry=r,
        )
        self.rejected = Counter(
            "courier_gateway_events_rejected",
            "Events rejected at the gateway (stored in _invalid), by reason.",
            ["type", "reason"],
            registry=r,
        )
        self.requests = Counter(
            "courier_gateway_requests",
            "Ingest requests (POST /v1/events and the Segment routes) by HTTP status.",
            ["status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "courier_gateway_request_seconds",
            "Time to answer an ingest request (POST /v1/events and the Segment routes).",
            buckets=_LATENCY_BUCKETS_SECS,
            registry=r,
        )
        self.publish_seconds = Histogram(
            "courier_gateway_publish_seconds",
            "Time from publish to the transport's stored ack, per message.",
            buckets=_LATENCY_BUCKETS_SECS,
            registry=r,
        )
        self.publish_failures = Counter(
            "courier_gateway_publish_failures",
            "Messages the transport did not acknowledge, by reason.",
            ["reason"],
            registry=r,
        )
        self.message_events = Histogram(
            "courier_gateway_message_events",
            "Events per stored message (group commit effectiveness).",
            buckets=_EVENTS_BUCKETS,
            registry=r,
        )
        for reason in PUBLISH_FAILURES:
            self.publish_failures.labels(reason)

    def published(self, seconds: float, events: int) -> None:
        self.publish_seconds.observe(seconds)
        self.message_events.observe(events)

    def publish_failed(self, reason: PublishFailure) -> None:
        self.publish_failures.labels(reason).inc()

    def accept(self, event_type: str, n: int) -> None:
        self.accepted.labels(event_type).inc(n)

    def reject(self, event_type: str, reason: RejectReason, n: int = 1) -> None:
        assert reason in REJECT_REASONS
        self.rejected.labels(event_type, reason).inc(n)

    def request(self, status: int, seconds: float) -> None:
        self.requests.labels(str(status)).inc()
        self.request_seconds.observe(seconds)

    def exposition(self) -> bytes:
        if self.shared_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(self.shared_dir))
        return generate_latest(merged)
