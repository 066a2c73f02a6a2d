"""The bench's reading of the gateway's latency histograms (bench/_latency.py)."""

from __future__ import annotations

import math

from bench._latency import breakdown, quantile

_LE = [0.001, 0.002, 0.005, math.inf]


def _cumulative(counts: list[float]) -> list[tuple[float, float]]:
    total, out = 0.0, []
    for le, n in zip(_LE, counts, strict=True):
        total += n
        out.append((le, total))
    return out


def test_a_quantile_covers_only_the_observations_between_two_scrapes():
    before = _cumulative([100, 0, 0, 0])  # all fast, before the load
    after = _cumulative([100, 50, 50, 0])  # the load: 50 in (1, 2] ms, 50 in (2, 5] ms
    assert quantile(before, after, 0.5) == 0.002
    assert math.isclose(quantile(before, after, 0.99), 0.002 + 0.003 * 49 / 50)


def test_a_quantile_past_the_last_finite_bucket_is_its_bound_and_nothing_is_nan():
    after = _cumulative([0, 0, 1, 1])
    assert quantile([], after, 0.99) == 0.005
    assert math.isnan(quantile(after, after, 0.5))


def test_the_breakdown_reports_ms_and_counts_and_none_for_missing_histograms():
    name = "courier_gateway_publish_seconds"
    out = breakdown({}, {name: _cumulative([10, 0, 0, 0])})
    assert out["gw_publish_p50_ms"] == 0.5
    assert out["gw_publish_count"] == 10
    assert out["gw_validate_p99_ms"] is None
