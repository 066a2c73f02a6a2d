"""Compression bombs and oversized bodies: refused with 413, in bounded memory.

Peak traced allocation (tracemalloc) while the gateway handles one hostile
request stays within a small multiple of ``max_body_bytes``, however far the
body would expand.
"""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import AsyncIterator

import pytest
import zstandard

MAX_BODY_BYTES = 1024 * 1024
#: Body read + decompressed copy + join, plus zstd's one-step overshoot (body.py).
PEAK_BOUND_BYTES = 4 * MAX_BODY_BYTES + 8 * 1024 * 1024


def gzip_bomb(size: int) -> bytes:
    c = zlib.compressobj(9, wbits=31)
    chunk = b"\0" * (1024 * 1024)
    return b"".join(c.compress(chunk) for _ in range(size >> 20)) + c.flush()


def zstd_bomb(size: int) -> bytes:
    c = zstandard.ZstdCompressor(level=19)
    return c.compress(b"\0" * size)


BOMBS = {
    "gzip 256 MiB of zeros": ("gzip", lambda: gzip_bomb(256 * 1024 * 1024)),
    "zstd 256 MiB of zeros": ("zstd", lambda: zstd_bomb(256 * 1024 * 1024)),
    "gzip members that each stay under the limit": (
        "gzip",
        lambda: gzip.compress(b"\0" * (MAX_BODY_BYTES - 10)) * 50,
    ),
    "zstd frames that each stay under the limit": (
        "zstd",
        lambda: zstandard.ZstdCompressor().compress(b"\0" * (MAX_BODY_BYTES - 10)) * 50,
    ),
    "gzip of a gzip bomb (only one layer is undone)": (
        "gzip",
        lambda: gzip.compress(gzip_bomb(64 * 1024 * 1024)),
    ),
}


async def measure_peak(coro) -> tuple[object, int]:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = await coro
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", list(BOMBS))
async def test_compression_bombs_are_413_in_bounded_memory(start_gateway, sink, name):
    gw = await start_gateway(max_body_bytes=MAX_BODY_BYTES)
    encoding, make = BOMBS[name]
    body = make()
    assert len(body) < MAX_BODY_BYTES
    r, peak = await measure_peak(gw.post(body, content_encoding=encoding))
    assert r.status_code in (400, 413), r.text
    assert "larger than" in r.json()["error"] or "JSON" in r.json()["error"]
    assert peak < PEAK_BOUND_BYTES, f"{name}: peak {peak} bytes"
    assert sink.messages == []


async def test_an_endless_streamed_body_is_cut_off_at_the_limit_in_bounded_memory(
    start_gateway, sink
):
    gw = await start_gateway(max_body_bytes=MAX_BODY_BYTES)
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        chunk = b"[" * 65536
        while sent < 1024 * MAX_BODY_BYTES:
            sent += len(chunk)
            yield chunk

    r, peak = await measure_peak(
        gw.client.post(
            "/v1/events", content=endless(), headers={"content-type": "application/json"}
        )
    )
    assert r.status_code == 413
    assert sent < 2 * MAX_BODY_BYTES  # reading stopped soon after the limit
    assert peak < PEAK_BOUND_BYTES


async def test_a_declared_length_over_the_limit_is_413_before_reading(start_gateway):
    gw = await start_gateway(max_body_bytes=MAX_BODY_BYTES)
    for length in (str(MAX_BODY_BYTES + 1), "9" * 5000):
        r = await gw.post(b"{}", content_length=length)
        assert r.status_code in (400, 413), r.text
