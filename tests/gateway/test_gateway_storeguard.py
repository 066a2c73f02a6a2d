"""The store guard's estimate between two reads of the NATS store's usage."""

from __future__ import annotations

import pytest

from courier.errors import StreamFullError, TransportError
from courier.gateway.storeguard import StoreGuard

MIB = 1024 * 1024


class _Usage:
    """The store's usage as a test sets it; ``None`` makes the read fail."""

    def __init__(self) -> None:
        self.bytes: int | None = 0

    async def store_used_bytes(self) -> int:
        if self.bytes is None:
            raise TransportError("NATS is down")
        return self.bytes


async def test_what_the_gateway_stores_counts_before_the_next_read():
    usage = _Usage()
    guard = StoreGuard(usage, limit_bytes=100 * MIB, headroom_bytes=10 * MIB)
    await guard.refresh()
    guard.check()
    for _ in range(89):
        guard.note_stored(MIB)
    guard.check()  # 89 MiB of the 90 events may use
    guard.note_stored(MIB)
    with pytest.raises(StreamFullError, match="kept for Courier's own records"):
        guard.check()
    usage.bytes = 90 * MIB  # the read now holds what the gateway counted: not twice
    await guard.refresh()
    assert guard.used_bytes == 90 * MIB


async def test_a_failed_read_keeps_the_last_estimate_and_room_comes_back_with_a_read():
    usage = _Usage()
    guard = StoreGuard(usage, limit_bytes=100 * MIB, headroom_bytes=10 * MIB)
    usage.bytes = 95 * MIB
    await guard.refresh()
    usage.bytes = None
    await guard.refresh()
    assert guard.full
    usage.bytes = 50 * MIB  # old events aged out
    await guard.refresh()
    guard.check()


def test_the_headroom_takes_at_most_a_quarter_of_a_small_store():
    guard = StoreGuard(_Usage(), limit_bytes=16 * MIB, headroom_bytes=256 * MIB)
    assert guard.events_limit_bytes == 12 * MIB
