"""Typed auditor telemetry (Prometheus), one registry per auditor."""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge

from courier.service.telemetry import consumer_pending_gauge

#: Which SLO a breach is about; the ``slo`` label.
Slo = Literal["timeliness", "completeness", "skewness"]
SLOS: tuple[Slo, ...] = ("timeliness", "completeness", "skewness")


class AuditorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.stream_events = Counter(
            "courier_audit_stream_events_total",
            "Events counted in the type's stream by the auditor",
            ["type"],
            registry=r,
        )
        self.stream_messages = Counter(
            "courier_audit_stream_messages_total",
            "Messages counted in the type's stream by the auditor",
            ["type"],
            registry=r,
        )
        self.redeliveries_skipped = Counter(
            "courier_audit_redeliveries_skipped_total",
            "Messages delivered again after their count was already stored (not recounted)",
            ["type"],
            registry=r,
        )
        self.pending = consumer_pending_gauge(r)
        self.oldest_uncounted_age = Gauge(
            "courier_audit_oldest_uncounted_age_seconds",
            "Age of the oldest message the auditor has not counted yet, per type",
            ["type"],
            registry=r,
        )
        self.slo_breaches = Counter(
            "courier_audit_slo_breaches_total",
            "Buckets found breaching an SLO (each bucket counted once per SLO)",
            ["type", "slo"],
            registry=r,
        )
        self.mismatches = Counter(
            "courier_audit_mismatches_total",
            "Buckets whose counts do not reconcile (loss or duplicates), each counted once",
            ["type"],
            registry=r,
        )
        self.late_buckets = Gauge(
            "courier_audit_late_buckets",
            "Recent buckets currently breaching the timeliness SLO",
            ["type"],
            registry=r,
        )
        self.mismatched_buckets = Gauge(
            "courier_audit_mismatched_buckets",
            "Recent buckets whose counts currently do not reconcile",
            ["type"],
            registry=r,
        )
        self.staging_bytes = Gauge(
            "courier_staging_bytes",
            "Bytes of staging files waiting for the closer, per type",
            ["type"],
            registry=r,
        )
