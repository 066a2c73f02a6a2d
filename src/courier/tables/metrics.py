"""Typed table-commit telemetry (Prometheus), registered beside the closer's."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class TableMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.commits = Counter(
            "courier_table_commits_total",
            "Bucket commits to Iceberg tables, by outcome (appended, overwritten, already, empty)",
            ["type", "outcome"],
            registry=r,
        )
        self.failures = Counter(
            "courier_table_commit_failures_total",
            "Bucket commits that failed and will be retried (mapping = refused, needs a fix)",
            ["type", "reason"],
            registry=r,
        )
        self.uncommitted = Gauge(
            "courier_table_uncommitted_buckets",
            "Closed buckets the type's table does not hold yet",
            ["type"],
            registry=r,
        )
        self.commit_seconds = Histogram(
            "courier_table_commit_seconds",
            "Seconds one bucket commit took (lookup, schema, checks, snapshot)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
