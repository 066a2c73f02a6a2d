"""Request bodies: bounded reading, bounded decompression, media types, JSON depth.

Every limit is enforced while the bytes arrive, never after buffering more
than it allows: the compressed body is read at most ``max_body_bytes + 1``
bytes far, and decompression stops as soon as its output passes
``max_body_bytes`` (a compression bomb costs at most one small step of
output beyond the limit).
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterator
from enum import Enum

import zstandard

from courier.errors import (
    MalformedRequestError,
    RequestTimeoutError,
    RequestTooLargeError,
    UnsupportedMediaError,
)


class BodyFormat(Enum):
    JSON = "application/json"
    NDJSON = "application/x-ndjson"


_FORMATS = {
    "application/json": BodyFormat.JSON,
    "application/x-ndjson": BodyFormat.NDJSON,
    "application/ndjson": BodyFormat.NDJSON,
    "application/jsonl": BodyFormat.NDJSON,
}
ENCODINGS = ("identity", "gzip", "zstd")
#: Compressed input fed to zstd per step. One zstd RLE block turns 4 input bytes
#: into up to 128 KiB, so a step of 256 bytes bounds the overshoot to 8 MiB.
_ZSTD_STEP_BYTES = 256


def body_format(content_type: str | None) -> BodyFormat:
    """The body format named by a Content-Type header, or UnsupportedMediaError."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    fmt = _FORMATS.get(media)
    if fmt is None:
        raise UnsupportedMediaError(
            f"Content-Type {content_type!r} is not supported; send application/json "
            '({"sent_at"?, "events": [...]}) or application/x-ndjson (one event per line)'
        )
    return fmt


def content_encoding(header: str | None) -> str:
    """The (single) Content-Encoding of a request, or UnsupportedMediaError."""
    enc = (header or "identity").strip().lower() or "identity"
    if enc == "x-gzip":
        enc = "gzip"
    if enc not in ENCODINGS:
        raise UnsupportedMediaError(
            f"Content-Encoding {header!r} is not supported; send identity, gzip or zstd"
        )
    return enc


async def read_body(
    chunks: AsyncIterator[bytes],
    *,
    content_length: str | None,
    encoding: str,
    max_body_bytes: int,
    timeout_secs: float | None = None,
) -> bytes:
    """Read and decompress a request body, enforcing ``max_body_bytes`` on both sides.

    The whole body must arrive within ``timeout_secs`` (RequestTimeoutError, 408):
    a client trickling bytes (slow loris) cannot hold a request open for longer.
    """
    too_big = RequestTooLargeError(
        f"request body is larger than {max_body_bytes} bytes; split the batch into smaller ones"
    )
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise MalformedRequestError(
                f"Content-Length {content_length!r} is not a number"
            ) from None
        if declared > max_body_bytes:
            raise too_big
    try:
        async with asyncio.timeout(timeout_secs):
            raw = await _read_raw(chunks, max_body_bytes, too_big)
    except TimeoutError:
        raise RequestTimeoutError(
            f"the request body did not arrive within {timeout_secs:g}s; "
            "send it faster or in smaller batches"
        ) from None
    if encoding == "gzip":
        return _gunzip(raw, max_body_bytes)
    if encoding == "zstd":
        return _unzstd(raw, max_body_bytes)
    return raw


async def _read_raw(
    chunks: AsyncIterator[bytes], max_body_bytes: int, too_big: RequestTooLargeError
) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_body_bytes:
            raise too_big
        parts.append(chunk)
    return b"".join(parts)


def _decompressed_too_big(limit: int) -> RequestTooLargeError:
    return RequestTooLargeError(
        f"decompressed request body is larger than {limit} bytes; split the batch into smaller ones"
    )


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress (possibly multi-member) gzip, stopping past ``limit`` output bytes."""
    out: list[bytes] = []
    size = 0
    try:
        while data:
            d = zlib.decompressobj(wbits=31)
            pending = data
            while True:
                piece = d.decompress(pending, limit + 1 - size)
                size += len(piece)
                if size > limit:
                    raise _decompressed_too_big(limit)
                out.append(piece)
                pending = d.unconsumed_tail
                if d.eof:
                    data = d.unused_data
                    break
                if not pending:
                    raise MalformedRequestError("gzip request body is truncated")
    except zlib.error as exc:
        raise MalformedRequestError(f"gzip request body does not decompress: {exc}") from exc
    return b"".join(out)


def _unzstd(data: bytes, limit: int) -> bytes:
    """Decompress (possibly multi-frame) zstd, stopping past ``limit`` output bytes."""
    out: list[bytes] = []
    size = 0
    dctx = zstandard.ZstdDecompressor()
    try:
        while data:
            d = dctx.decompressobj()
            pos = 0
            while not d.eof and pos < len(data):
                piece = d.decompress(data[pos : pos + _ZSTD_STEP_BYTES])
                pos += _ZSTD_STEP_BYTES
                size += len(piece)
                if size > limit:
                    raise _decompressed_too_big(limit)
                out.append(piece)
            if not d.eof:
                raise MalformedRequestError("zstd request body is truncated")
            data = d.unused_data + data[pos:]
    except zstandard.ZstdError as exc:
        raise MalformedRequestError(f"zstd request body does not decompress: {exc}") from exc
    return b"".join(out)


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(rb"[^\[\]{}]+")
_INNERMOST = re.compile(rb"\[\]|\{\}")


def check_depth(body: bytes, max_depth: int) -> None:
    """Raise MalformedRequestError if JSON ``body`` nests deeper than ``max_depth``.

    Runs in C-speed passes: drop strings, keep only brackets, then peel the
    innermost ``[]``/``{}`` pairs once per level. Brackets left after
    ``max_depth`` passes mean deeper nesting (or unbalanced brackets, which the
    parser rejects anyway).
    """
    brackets = _NOT_BRACKETS.sub(b"", _STRINGS.sub(b"", body))
    if brackets.count(b"[") + brackets.count(b"{") <= max_depth:
        return
    for _ in range(max_depth):
        # One regex pass removes only the pairs innermost before it (no rescan).
        peeled = _INNERMOST.sub(b"", brackets)
        if not peeled or peeled == brackets:
            return
        brackets = peeled
    if brackets:
        raise MalformedRequestError(
            f"JSON is nested deeper than {max_depth} levels; flatten the events"
        )
