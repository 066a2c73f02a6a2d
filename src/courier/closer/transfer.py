"""Events and transfer delay per accepting DC, counted while a bucket's rows stream past.

The transfer delay of an event is the delivery region's store time minus its DC
receive time (``published_at - received_at``, DESIGN §13): how late a DC's events
reach the bucket they land in. The closer writes, per DC, the count and p50/p99/max
of that delay into the manifest (:class:`courier.storage.manifest.DcTransfer`).

A bucket can hold far more rows than memory, and the closer sees them once, in
chunks; so the delays go into a log-linear histogram per DC, not a list:
milliseconds below 1,024 ms each have their own bin (exact), and each doubling
above has 512 bins (the value reported is its bin's lower bound, at most 0.2 %
below the true one). The max is exact. The result depends only on the rows, not
on how they were chunked, so a re-run close writes the same manifest.

A delay below zero (the DC's clock ahead of the delivery region's) counts as 0.
Rows with a null ``received_dc`` (no DC known) are counted by no DC.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from courier.storage.manifest import DcTransfer

#: Below this many milliseconds every millisecond has its own bin.
_EXACT_MS = 1024
#: Bins per doubling above ``_EXACT_MS`` (log2).
_SUB_BITS = 9
_EXACT_BITS = _EXACT_MS.bit_length() - 1


def _bins(ms: np.ndarray) -> np.ndarray:
    """The histogram bin of each delay in milliseconds (non-negative int64)."""
    big = ms >= _EXACT_MS
    exp = np.frexp(np.maximum(ms, 1).astype(np.float64))[1].astype(np.int64) - 1
    shift = np.maximum(exp - _SUB_BITS, 0)
    sub = (ms >> shift) - (1 << _SUB_BITS)
    logbin = _EXACT_MS + ((exp - _EXACT_BITS) << _SUB_BITS) + sub
    return np.where(big, logbin, ms)


def _bin_floor_ms(b: int) -> int:
    """The smallest delay (ms) of bin ``b``."""
    if b < _EXACT_MS:
        return b
    exp, sub = divmod(b - _EXACT_MS, 1 << _SUB_BITS)
    exp += _EXACT_BITS
    return ((1 << _SUB_BITS) + sub) << (exp - _SUB_BITS)


class _Histogram:
    def __init__(self) -> None:
        self.events = 0
        #: Events with a transfer delay (a row without ``received_at`` has none).
        self.timed = 0
        self.max_us = 0
        self.bins: dict[int, int] = {}

    def add(self, events: int, delays_us: np.ndarray) -> None:
        self.events += events
        if not len(delays_us):
            return
        self.timed += len(delays_us)
        self.max_us = max(self.max_us, int(delays_us.max()))
        # At most ~1,000 + 512 per doubling bins: a count per bin is O(rows), no sort.
        counts = np.bincount(_bins(delays_us // 1000))
        found = np.flatnonzero(counts)
        for b, n in zip(found.tolist(), counts[found].tolist(), strict=True):
            self.bins[b] = self.bins.get(b, 0) + n

    def quantile_secs(self, q: float) -> float:
        """Nearest rank: the (bin floor of the) smallest delay with at least ``q`` of
        the events at or below it."""
        rank = max(1, math.ceil(q * self.timed))
        seen = 0
        for b in sorted(self.bins):
            seen += self.bins[b]
            if seen >= rank:
                return min(_bin_floor_ms(b) / 1000, self.max_us / 1_000_000)
        return self.max_us / 1_000_000

    def result(self) -> DcTransfer:
        return DcTransfer(
            events=self.events,
            transfer_delay_p50_secs=round(self.quantile_secs(0.5), 3),
            transfer_delay_p99_secs=round(self.quantile_secs(0.99), 3),
            transfer_delay_max_secs=round(self.max_us / 1_000_000, 3),
        )


class TransferStats:
    """Per DC: events and their transfer delays, over chunks of a bucket's final rows."""

    def __init__(self) -> None:
        self._dcs: dict[str, _Histogram] = {}

    def observe(self, t: pa.Table) -> None:
        """Count the rows of ``t`` (the bucket schema's ``received_dc``, ``received_at``
        and ``published_at`` columns)."""
        dc = t.column("received_dc")
        if dc.null_count == len(dc):
            return
        delay = pc.subtract(
            t.column("published_at").cast(pa.int64()), t.column("received_at").cast(pa.int64())
        )
        encoded = pc.dictionary_encode(dc).combine_chunks()
        index = pc.fill_null(encoded.indices, -1).to_numpy()
        timed = pc.is_valid(delay).to_numpy(zero_copy_only=False)
        delays = np.maximum(pc.fill_null(delay, 0).to_numpy(), 0)
        for i, name in enumerate(encoded.dictionary.to_pylist()):
            mine = index == i
            hist = self._dcs.get(name)
            if hist is None:
                hist = self._dcs[name] = _Histogram()
            hist.add(int(mine.sum()), delays[mine & timed])

    def result(self) -> dict[str, DcTransfer]:
        """Per DC (sorted by name) its manifest entry."""
        return {name: self._dcs[name].result() for name in sorted(self._dcs)}
