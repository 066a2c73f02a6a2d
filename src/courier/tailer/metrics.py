"""Prometheus metrics of a tailer, read from :meth:`Tailer.stats` at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from courier.sdk.metrics import families
from courier.tailer.tailer import Tailer


class TailerCollector(Collector):
    """``courier_tailer_*`` metrics of one tailer, labelled ``tailer=<name>``."""

    def __init__(self, tailer: Tailer, name: str = "default") -> None:
        self._tailer = tailer
        self._name = name

    def collect(self) -> Iterator[Metric]:
        s = self._tailer.stats()
        gauges = (
            ("courier_tailer_files_open", "Files being followed.", float(s.files_open)),
            (
                "courier_tailer_unacked_bytes",
                "Bytes of the followed files the gateway has not acknowledged (the lag).",
                float(s.unacked_bytes),
            ),
        )
        counters = (
            ("courier_tailer_lines_sent", "Lines the gateway acknowledged.", float(s.lines_sent)),
            (
                "courier_tailer_lines_rejected",
                "Lines rejected: not JSON, too long, or refused by the gateway.",
                float(s.lines_rejected),
            ),
        )
        yield from families(gauges, counters, "tailer", self._name)
