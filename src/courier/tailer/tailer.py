"""``courier tail``: follow JSON-lines files and deliver every line to the gateway once.

One loop, one thread; each round:

1. every ``glob_interval_secs``: expand the patterns, open new files at the
   stored position of their fingerprint, notice renamed, deleted and
   truncated (copytruncate) files;
2. read complete lines from the open files, up to one batch; a line without
   ``id`` gets ``tail-<fingerprint>-<offset>``; a line that is not a JSON
   object, or longer than ``max_line_bytes``, becomes a rejection;
3. deliver the batch with the SDK's :class:`~courier.sdk.GatewayClient`
   (it blocks, retrying, until the gateway answered: that is the backpressure);
4. write rejections (invalid lines, and lines the gateway rejected) to the
   rejected log with file, offset and reason;
5. only then advance the positions of the files read, and every
   ``checkpoint_interval_secs`` write them durably.

A crash anywhere replays from the last written positions: lines come again
with the same ids, and the closer's dedup keeps one copy of each.

A file whose path went away (renamed out of the patterns, or deleted) is read
to its end and closed once it has been quiet for ``rotate_wait_secs``.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec
from pydantic import BaseModel, ConfigDict

from courier.sdk.delivery import (
    Compression,
    DeliveryPolicy,
    DeliveryStopped,
    EventRejection,
    GatewayClient,
)
from courier.sdk.rejected import RejectedLog
from courier.tailer.checkpoint import Checkpoint
from courier.tailer.files import Line, Overlong, TailedFile, line_id, stat_key

log = logging.getLogger("courier.tailer")

MIB = 1024 * 1024
_PREVIEW_BYTES = 1024


class TailerSettings(BaseModel):
    """Settings of one tailer process; units in every name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    patterns: tuple[str, ...]
    state_dir: Path
    gateway_url: str = "http://127.0.0.1:8080"
    #: Lines longer than this are rejected (the gateway's ``max_event_bytes``).
    max_line_bytes: int = 256 * 1024
    batch_max_events: int = 1000
    batch_max_bytes: int = 1 * MIB
    poll_interval_ms: int = 100
    glob_interval_secs: float = 1.0
    rotate_wait_secs: float = 1.0
    checkpoint_interval_secs: float = 1.0
    #: Positions of content not seen for this long are dropped from the checkpoint.
    forget_after_secs: float = 7 * 86_400
    compression: Compression = "zstd"
    request_timeout_secs: float = 30.0
    backoff_initial_secs: float = 0.1
    backoff_max_secs: float = 30.0
    api_key: str | None = None

    def delivery_policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(
            gateway_url=self.gateway_url,
            compression=self.compression,
            request_timeout_secs=self.request_timeout_secs,
            backoff_initial_secs=self.backoff_initial_secs,
            backoff_max_secs=self.backoff_max_secs,
            api_key=self.api_key,
        )


class Deliverer(Protocol):
    """What the tailer needs from the gateway: :class:`GatewayClient` or a test double."""

    def deliver(self, events: Sequence[bytes]) -> list[EventRejection]: ...


class _Head(msgspec.Struct):
    id: Any = msgspec.UNSET


_decode_head = msgspec.json.Decoder(_Head).decode
_decode_any = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class _Item:
    file: TailedFile
    offset: int
    line: bytes


@dataclass(frozen=True, slots=True)
class TailerStats:
    lines_sent: int
    lines_rejected: int
    files_open: int
    #: Bytes of the open files the gateway has not acknowledged: how far behind it is.
    unacked_bytes: int = 0


def event_payload(fp: str, offset: int, line: bytes) -> bytes:
    """The event JSON to post for a line; ValueError if the line is not a JSON object."""
    try:
        head = _decode_head(line)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a JSON object: {exc}") from exc
    if isinstance(head.id, str) and head.id:
        return line
    new_id = line_id(fp, offset).encode()
    body = line.lstrip()[1:]
    if head.id is msgspec.UNSET and body.lstrip()[:1] != b"}":
        return b'{"id":"' + new_id + b'",' + body
    doc = _decode_any(line)
    doc["id"] = new_id.decode()
    return _encode(doc)


class Tailer:
    """Follows the files matching ``settings.patterns``; :meth:`run` until ``stop`` is set."""

    def __init__(
        self,
        settings: TailerSettings,
        *,
        deliverer: Deliverer | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self._client: GatewayClient | None = None
        if deliverer is None:
            self._client = GatewayClient(settings.delivery_policy(), stop=self.stop)
            deliverer = self._client
        self._deliverer = deliverer
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint = Checkpoint(settings.state_dir)
        self.rejected_log = RejectedLog(settings.state_dir / "rejected.jsonl")
        self._files: dict[tuple[int, int], TailedFile] = {}
        self._last_scan = 0.0
        self._last_save = time.monotonic()
        self._dirty = False
        self.lines_sent = 0
        self.lines_rejected = 0

    def stats(self) -> TailerStats:
        """A snapshot; safe to call from another thread (a metrics scrape)."""
        files = list(self._files.values())  # copies are atomic; iterating live dicts is not
        acked = dict(self.checkpoint.positions)
        behind = 0
        for f in files:
            position = acked.get(f.fp)
            with contextlib.suppress(OSError):  # closed meanwhile: nothing left to send
                size = os.fstat(f.fd).st_size
                behind += max(0, size - (position.offset if position else 0))
        return TailerStats(self.lines_sent, self.lines_rejected, len(files), behind)

    def run(self) -> None:
        """Follow the files until ``stop`` is set; saves the positions on the way out."""
        log.info("tailing %s", " ".join(self.settings.patterns))
        try:
            while not self.stop.is_set():
                try:
                    handled = self.run_once()
                except DeliveryStopped:
                    break
                if not handled:
                    self.stop.wait(self.settings.poll_interval_ms / 1000)
        finally:
            self.close()

    def close(self) -> None:
        if self._dirty:
            self.checkpoint.save()
            self._dirty = False
        for f in self._files.values():
            f.close()
        self._files.clear()
        if self._client is not None:
            self._client.close()

    def run_once(self) -> int:
        """One round (steps 1-5 of the module docstring); returns how many lines it handled."""
        now = time.monotonic()
        # 1. discover
        if now - self._last_scan >= self.settings.glob_interval_secs:
            self._scan(now)
            self._last_scan = now
        # 2. read one batch
        items, rejections = self._read_batch()
        invalid = len(rejections)
        # 3. deliver
        size = self.settings.batch_max_events
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            for r in self._deliverer.deliver([it.line for it in chunk]):
                it = chunk[r.index]
                rejections.append(_rejection(it.file, it.offset, r.reason, it.line))
        # 4. rejections, durably, before positions move past them
        self.rejected_log.write(rejections)
        # 5. positions
        touched = {id(it.file): it.file for it in items}
        for f in self._files.values():
            touched.setdefault(id(f), f)
        for f in touched.values():
            self.checkpoint.advance(f.fp, f.resume_offset, f.path)
        handled = len(items) + len(rejections)
        self.lines_sent += len(items) - (len(rejections) - invalid)
        self.lines_rejected += len(rejections)
        if handled:
            self._dirty = True
        if self._dirty and now - self._last_save >= self.settings.checkpoint_interval_secs:
            self.checkpoint.save()
            self._last_save, self._dirty = now, False
        self._retire(now)
        return handled

    # -- steps ------------------------------------------------------------------

    def _scan(self, now: float) -> None:
        seen: set[tuple[int, int]] = set()
        for pattern in self.settings.patterns:
            for path in sorted(glob.glob(pattern)):
                key = stat_key(path)
                if key is None:
                    continue
                seen.add(key)
                known = self._files.get(key)
                if known is not None:
                    known.path, known.detached_at = path, None
                    continue
                f = TailedFile.open(path, self.checkpoint.offsets())
                if f is not None and (f.dev, f.ino) == key:
                    self._files[key] = f
                    log.info("following %s from byte %d", path, f.offset)
                elif f is not None:
                    f.close()  # replaced between stat and open: next scan
        for key, f in list(self._files.items()):
            if f.replaced():
                log.info("%s was truncated or rewritten; reading it as new content", f.path)
                f.close()
                del self._files[key]
            elif key not in seen and f.detached_at is None:
                f.detached_at = now

    def _read_batch(self) -> tuple[list[_Item], list[dict[str, Any]]]:
        s = self.settings
        items: list[_Item] = []
        rejections: list[dict[str, Any]] = []
        budget = s.batch_max_bytes
        for f in list(self._files.values()):
            if budget <= 0 or len(items) >= s.batch_max_events:
                break
            for got in f.read(budget, s.max_line_bytes):
                if isinstance(got, Overlong):
                    reason = (
                        f"line is {got.length} bytes, more than max_line_bytes={s.max_line_bytes}"
                    )
                    rejections.append(_rejection(f, got.offset, reason, None))
                    continue
                assert isinstance(got, Line)
                try:
                    payload = event_payload(f.fp, got.offset, got.data)
                except ValueError as exc:
                    rejections.append(_rejection(f, got.offset, str(exc), got.data))
                    continue
                items.append(_Item(f, got.offset, payload))
                budget -= len(payload)
        return items, rejections

    def _retire(self, now: float) -> None:
        """Close detached files read to the end and quiet for ``rotate_wait_secs``."""
        wait = self.settings.rotate_wait_secs
        for key, f in list(self._files.items()):
            if f.detached_at is not None and f.at_eof and now - f.detached_at >= wait:
                log.info("finished %s (rotated or deleted) at byte %d", f.path, f.offset)
                f.close()
                del self._files[key]
        cutoff = time.time() - self.settings.forget_after_secs
        self.checkpoint.forget_older_than(cutoff, {f.fp for f in self._files.values()})


def _rejection(f: TailedFile, offset: int, reason: str, line: bytes | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"file": f.path, "offset": offset, "reason": reason}
    if line is not None:
        entry["line"] = line[:_PREVIEW_BYTES].decode("utf-8", "replace")
    return entry


def glob_patterns(patterns: Sequence[str]) -> tuple[str, ...]:
    return tuple(str(Path(p).expanduser()) for p in patterns)
