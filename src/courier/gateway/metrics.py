"""The gateway's Prometheus metrics, one registry per app.

With pre-forked workers (``gateway.workers`` > 1) a scrape of ``/metrics`` lands
on whichever worker accepts it, so the workers share their values through
prometheus_client's multi-process mode: :func:`share_across_workers` runs in the
parent before the fork (it is process-wide by nature: prometheus_client chooses
how values are stored when a metric is created), each worker writes its values to
memory-mapped files in that directory, and any worker's ``/metrics`` sums them.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Literal

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

#: Fine enough below and around the 25 ms p99 target (DESIGN §11) to tell the steps
#: of a request apart: validation takes ~0.1 ms, a fsync'd publish a few ms.
_LATENCY_BUCKETS_SECS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.025,
    0.035,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
_EVENTS_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000)


#: How often the event loop's lag is sampled: cheap (a timer), often enough for a p99.
LOOP_LAG_PROBE_SECS = 0.05

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
        # Where a request's time goes (issue 13): validation and the stored-form
        # encode are CPU; the group wait and the publish are the store; the event
        # loop's lag is how long a ready callback (a request, an ack) waits its turn.
        self.validate_seconds = Histogram(
            "courier_gateway_validate_seconds",
            "Time to decode and validate a request's batch (and admit it), per request.",
            buckets=_LATENCY_BUCKETS_SECS,
            registry=r,
        )
        self.encode_seconds = Histogram(
            "courier_gateway_encode_seconds",
            "Time to encode a request's events in the stored form, per request.",
            buckets=_LATENCY_BUCKETS_SECS,
            registry=r,
        )
        self.group_wait_seconds = Histogram(
            "courier_gateway_group_wait_seconds",
            "Time a request's events waited in the group commit queue before their "
            "message was published, per queued piece.",
            buckets=_LATENCY_BUCKETS_SECS,
            registry=r,
        )
        self.store_wait_seconds = Histogram(
            "courier_gateway_store_wait_seconds",
            "Time from handing a request's events to the group commit until every message "
            "holding them was acknowledged and the request resumed, per request.",
            buckets=_LATENCY_BUCKETS_SECS,
            registry=r,
        )
        self.loop_lag_seconds = Histogram(
            "courier_gateway_loop_lag_seconds",
            "How late the event loop ran a timer it was asked to run (sampled a few "
            "times a second): queueing of ready work behind busy CPU.",
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
        # Labelled children by label value: .labels() costs a lock and a tuple per call,
        # twice per request (issue 13). Both label sets are bounded (types, statuses).
        self._accepted: dict[str, Any] = {}
        self._requests: dict[int, Any] = {}

    def published(self, seconds: float, events: int) -> None:
        self.publish_seconds.observe(seconds)
        self.message_events.observe(events)

    def validated(self, seconds: float) -> None:
        self.validate_seconds.observe(seconds)

    def encoded(self, seconds: float) -> None:
        self.encode_seconds.observe(seconds)

    def group_waited(self, seconds: float) -> None:
        self.group_wait_seconds.observe(seconds)

    def store_waited(self, seconds: float) -> None:
        self.store_wait_seconds.observe(seconds)

    def loop_lagged(self, seconds: float) -> None:
        self.loop_lag_seconds.observe(seconds)

    async def watch_loop_lag(self, every_secs: float = LOOP_LAG_PROBE_SECS) -> None:
        """Forever: sleep ``every_secs`` and record how much later than asked the loop woke
        (run it as a task of the app's lifespan; cancel it to stop)."""
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + every_secs
            await asyncio.sleep(every_secs)
            self.loop_lagged(max(0.0, loop.time() - asked))

    def publish_failed(self, reason: PublishFailure) -> None:
        self.publish_failures.labels(reason).inc()

    def accept(self, event_type: str, n: int) -> None:
        child = self._accepted.get(event_type)
        if child is None:
            child = self._accepted[event_type] = self.accepted.labels(event_type)
        child.inc(n)

    def reject(self, event_type: str, reason: RejectReason, n: int = 1) -> None:
        assert reason in REJECT_REASONS
        self.rejected.labels(event_type, reason).inc(n)

    def request(self, status: int, seconds: float) -> None:
        child = self._requests.get(status)
        if child is None:
            child = self._requests[status] = self.requests.labels(str(status))
        child.inc()
        self.request_seconds.observe(seconds)

    def exposition(self) -> bytes:
        if self.shared_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(self.shared_dir))
        return generate_latest(merged)
