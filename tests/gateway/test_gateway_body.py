"""Bounded body reading and decompression, media types and the JSON depth check."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import pytest
import zstandard

from courier.errors import MalformedRequestError, RequestTooLargeError, UnsupportedMediaError
from courier.gateway.body import BodyFormat, body_format, check_depth, content_encoding, read_body


async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def read(data: bytes, encoding: str = "identity", limit: int = 10_000) -> bytes:
    return await read_body(
        chunks(data), content_length=None, encoding=encoding, max_body_bytes=limit
    )


async def test_multi_member_gzip_and_multi_frame_zstd_are_read_whole():
    assert await read(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip") == b"abcd"
    z = zstandard.ZstdCompressor()
    assert await read(z.compress(b"ab") + z.compress(b"cd"), "zstd") == b"abcd"


async def test_truncated_or_corrupt_compressed_bodies_are_malformed():
    data = b"x" * 5000 + bytes(range(256)) * 10
    for encoding, packed in (
        ("gzip", gzip.compress(data)),
        ("zstd", zstandard.ZstdCompressor().compress(data)),
    ):
        with pytest.raises(MalformedRequestError, match=r"truncated|decompress"):
            await read(packed[:-10], encoding)
        with pytest.raises(MalformedRequestError):
            await read(b"not compressed at all", encoding)


async def test_reading_stops_one_byte_past_the_limit():
    consumed = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal consumed
        while True:
            consumed += 100
            yield b"x" * 100

    with pytest.raises(RequestTooLargeError):
        await read_body(endless(), content_length=None, encoding="identity", max_body_bytes=1000)
    assert consumed <= 1100


async def test_a_declared_length_over_the_limit_is_refused_before_reading():
    with pytest.raises(RequestTooLargeError):
        await read_body(chunks(b""), content_length="20000", encoding="identity", max_body_bytes=10)


async def test_decompressed_output_exactly_at_the_limit_is_fine():
    data = b"y" * 10_000
    assert await read(gzip.compress(data), "gzip") == data
    assert await read(zstandard.ZstdCompressor().compress(data), "zstd") == data
    with pytest.raises(RequestTooLargeError):
        await read(gzip.compress(data + b"y"), "gzip")
    with pytest.raises(RequestTooLargeError):
        await read(zstandard.ZstdCompressor().compress(data + b"y"), "zstd")


def test_media_types_and_encodings():
    assert body_format("application/json; charset=utf-8") is BodyFormat.JSON
    assert body_format("application/x-ndjson") is BodyFormat.NDJSON
    assert content_encoding(None) == "identity"
    assert content_encoding("GZIP") == "gzip"
    with pytest.raises(UnsupportedMediaError):
        body_format(None)
    with pytest.raises(UnsupportedMediaError):
        content_encoding("gzip, zstd")


def test_depth_counts_brackets_outside_strings_only():
    check_depth(b'{"a": "[[[[[[[[[[[[[[[[[[[["}', 2)
    check_depth(b'{"a": [1, {"b": []}]}', 4)
    with pytest.raises(MalformedRequestError):
        check_depth(b'{"a": [1, {"b": []}]}', 3)
    check_depth(b'{"a": "\\"[[[["}', 1)
    with pytest.raises(MalformedRequestError):
        check_depth(b"[" * 1000 + b"]" * 1000, 32)
