"""The gateway's Prometheus metrics, one registry per app (no process globals)."""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

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


class GatewayMetrics:
    """Typed telemetry of one gateway app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
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
            "POST /v1/events requests by HTTP status.",
            ["status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "courier_gateway_request_seconds",
            "Time to answer POST /v1/events.",
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
        return generate_latest(self.registry)
