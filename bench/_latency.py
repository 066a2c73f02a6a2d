"""Where the gateway's request time goes: quantiles of its own histograms over a bench's load.

The gateway declares one histogram per step of a request (gateway/metrics.py):
validation, the stored-form encode, the group commit wait, the publish ack, the
whole wait for the store, the whole request, and the event loop's lag. A bench
scrapes ``/metrics`` before and after its load, subtracts the two, and reads
p50/p99 of each from the buckets (linear within a bucket, as Prometheus's
``histogram_quantile`` does), so the figures cover the load alone.
"""

from __future__ import annotations

import math

import httpx
from prometheus_client.parser import text_string_to_metric_families

#: Summary key prefix -> the gateway's histogram.
STEPS = {
    "gw_request": "courier_gateway_request_seconds",
    "gw_validate": "courier_gateway_validate_seconds",
    "gw_encode": "courier_gateway_encode_seconds",
    "gw_group_wait": "courier_gateway_group_wait_seconds",
    "gw_publish": "courier_gateway_publish_seconds",
    "gw_store_wait": "courier_gateway_store_wait_seconds",
    "gw_loop_lag": "courier_gateway_loop_lag_seconds",
}

#: Histogram name -> cumulative count per upper bound, in bound order.
Buckets = dict[str, list[tuple[float, float]]]


def scrape(url: str, timeout_secs: float = 10.0) -> Buckets:
    """The buckets of every histogram the gateway at ``url`` exposes (empty if unreachable)."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=timeout_secs).text
    except httpx.HTTPError:
        return {}
    out: Buckets = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        rows = [
            (float(s.labels["le"]), s.value)
            for s in family.samples
            if s.name.endswith("_bucket") and not (set(s.labels) - {"le"})
        ]
        out[family.name] = sorted(rows)
    return out


def quantile(
    before: list[tuple[float, float]], after: list[tuple[float, float]], q: float
) -> float:
    """The ``q`` quantile (0-1) of the observations between two scrapes of one histogram."""
    start = dict(before)
    rows = [(le, n - start.get(le, 0.0)) for le, n in after]
    if not rows or rows[-1][1] <= 0:
        return math.nan
    rank = q * rows[-1][1]
    lower, below = 0.0, 0.0
    for le, n in rows:
        if n >= rank:
            if math.isinf(le):
                return lower  # beyond the last finite bound: its value is unknown
            inside = n - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = le, n
    return math.nan


def breakdown(before: Buckets, after: Buckets) -> dict[str, float | None]:
    """p50/p99 in ms of each step of :data:`STEPS` over the load, and its count."""
    out: dict[str, float | None] = {}
    for key, name in STEPS.items():
        b, a = before.get(name, []), after.get(name, [])
        for q in (50, 99):
            value = quantile(b, a, q / 100) if a else math.nan
            out[f"{key}_p{q}_ms"] = None if math.isnan(value) else round(value * 1000, 3)
        out[f"{key}_count"] = (a[-1][1] - dict(b).get(a[-1][0], 0.0)) if a else None
    return out
