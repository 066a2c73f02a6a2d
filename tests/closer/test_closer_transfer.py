"""Per-DC events and transfer delays of a bucket, as the closer counts them chunk by chunk."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from courier.closer.transfer import TransferStats
from courier.storage.manifest import DcTransfer

_TS = pa.timestamp("us", tz="UTC")
_RECEIVED_US = 1_764_151_200_000_000


def _rows(dcs: list[str | None], delays_ms: list[float]) -> pa.Table:
    received = [_RECEIVED_US + i for i in range(len(dcs))]
    published = [r + round(d * 1000) for r, d in zip(received, delays_ms, strict=True)]
    return pa.table(
        {
            "received_at": pa.array(received, pa.int64()).cast(_TS),
            "published_at": pa.array(published, pa.int64()).cast(_TS),
            "received_dc": pa.array(dcs, pa.string()),
        }
    )


def test_each_dc_gets_its_own_count_and_delays() -> None:
    stats = TransferStats()
    stats.observe(_rows(["dcA", "dcB", "dcA", None], [10, 30_000, 20, 5]))
    assert stats.result() == {
        "dcA": DcTransfer(
            events=2,
            transfer_delay_p50_secs=0.01,
            transfer_delay_p99_secs=0.02,
            transfer_delay_max_secs=0.02,
        ),
        "dcB": DcTransfer(
            events=1,
            transfer_delay_p50_secs=29.984,  # its bin's floor: within 0.2 % of 30 s
            transfer_delay_p99_secs=29.984,
            transfer_delay_max_secs=30.0,
        ),
    }


def test_quantiles_are_exact_to_the_millisecond_below_a_second_and_within_0_2_percent_above() -> (
    None
):
    rng = np.random.default_rng(7)
    delays = np.concatenate([rng.integers(0, 1000, 5000), rng.integers(1000, 600_000, 5000)])
    stats = TransferStats()
    stats.observe(_rows(["dcA"] * len(delays), delays.astype(float).tolist()))
    got = stats.result()["dcA"]
    ordered = np.sort(delays)
    p50 = ordered[int(np.ceil(0.5 * len(ordered))) - 1] / 1000
    p99 = ordered[int(np.ceil(0.99 * len(ordered))) - 1] / 1000
    assert got.events == len(delays)
    assert p50 * 0.998 <= got.transfer_delay_p50_secs <= p50
    assert p99 * 0.998 <= got.transfer_delay_p99_secs <= p99
    assert got.transfer_delay_max_secs == ordered[-1] / 1000
    low = TransferStats()
    low.observe(_rows(["dcA"] * 5, [1, 2, 3, 999, 4]))
    assert low.result()["dcA"].transfer_delay_p50_secs == 0.003


def test_the_result_does_not_depend_on_how_the_rows_were_chunked() -> None:
    rows = _rows(["dcA", "dcB"] * 500, [float(i * 37 % 5000) for i in range(1000)])
    whole = TransferStats()
    whole.observe(rows)
    chunked = TransferStats()
    for start in range(0, 1000, 64):
        chunked.observe(rows.slice(start, 64))
    assert chunked.result() == whole.result()


def test_a_dc_clock_ahead_of_the_delivery_region_counts_as_no_delay() -> None:
    stats = TransferStats()
    stats.observe(_rows(["dcA", "dcA"], [-250, 40]))
    got = stats.result()["dcA"]
    assert (got.events, got.transfer_delay_p50_secs, got.transfer_delay_max_secs) == (
        2,
        0.0,
        0.04,
    )


def test_rows_without_a_dc_are_counted_by_no_dc() -> None:
    stats = TransferStats()
    stats.observe(_rows([None, None], [1, 2]))
    assert stats.result() == {}
