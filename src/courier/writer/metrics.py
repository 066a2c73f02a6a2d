"""Typed writer telemetry (Prometheus), one registry per writer."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class WriterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.rows_received = Counter(
            "courier_writer_rows_received_total",
            "Rows decoded from the stream",
            ["type"],
            registry=r,
        )
        self.rows_bulk_decoded = Counter(
            "courier_writer_rows_bulk_decoded_total",
            "Rows of those DuckDB's JSON reader decoded (large gateway-built batches); "
            "pyarrow.json decoded the rest",
            registry=r,
        )
        self.rows_flushed = Counter(
            "courier_writer_rows_flushed_total",
            "Rows written to staging files",
            ["type"],
            registry=r,
        )
        self.flushes = Counter(
            "courier_writer_flushes_total", "Staging files written", ["type"], registry=r
        )
        self.storage_errors = Counter(
            "courier_writer_storage_errors_total", "Failed staging writes", ["type"], registry=r
        )
        self.quarantined = Counter(
            "courier_writer_quarantined_total",
            "Messages quarantined as undecodable",
            ["type"],
            registry=r,
        )
        self.buffered_bytes = Gauge(
            "courier_writer_buffered_bytes",
            "Bytes of rows buffered, not yet in staging",
            registry=r,
        )
