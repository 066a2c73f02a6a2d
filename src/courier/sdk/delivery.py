"""Posting event batches to the gateway until it answers: the one retry policy of every producer.

Both the SDK's sender thread and the tailer call :meth:`GatewayClient.deliver`.
It blocks until the gateway has given a final answer for every event of the
batch, and returns the events it rejected. The rules (DESIGN §8, §9):

- 2xx: the events not listed in ``rejected`` are durably stored; the listed
  ones are final rejections (never retried).
- 429 / 503: retry the same batch after ``Retry-After`` (or the backoff).
- connection errors, timeouts, other 5xx, 401/403/404 (a misconfiguration
  must not turn events into rejections): retry with exponential backoff and
  jitter, capped at ``backoff_max_secs``, forever; events are never dropped
  for age.
- 400 / 413 / 415 / 422 for the batch as a whole: the batch is split in
  halves and each half sent again, down to single events; an event the
  gateway refuses alone is a rejection with the gateway's reason. So one
  poison event costs ``log2(n)`` extra requests and never blocks the rest.
  (A 415 first drops compression, in case the gateway does not speak it.)

``stop`` (a threading.Event) interrupts the waits; ``deliver`` then raises
:class:`DeliveryStopped` and the caller keeps the batch for later.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import httpx
import msgspec
import zstandard

from courier.errors import CourierError
from courier.model import iso_utc

log = logging.getLogger("courier.sdk.delivery")

Compression = Literal["zstd", "gzip", "none"]
_WHOLE_BATCH_REFUSALS = frozenset({400, 413, 415, 422})
_MAX_RETRY_AFTER_SECS = 300.0


class DeliveryStopped(CourierError):
    """Delivery was interrupted by shutdown; the batch was not (fully) acknowledged."""


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Where and how to post: the settings shared by the SDK and the tailer."""

    gateway_url: str = "http://127.0.0.1:8080"
    compression: Compression = "zstd"
    request_timeout_secs: float = 30.0
    backoff_initial_secs: float = 0.1
    backoff_max_secs: float = 30.0
    #: Sent as ``Authorization: Bearer <key>`` when set.
    api_key: str | None = None


@dataclass(frozen=True, slots=True)
class EventRejection:
    """An event the gateway refused for good: its index in the delivered batch and why."""

    index: int
    reason: str
    #: 200 when rejected inside an accepted batch, else the status that refused it alone.
    status: int


@dataclass(frozen=True, slots=True)
class _Refused:
    status: int
    message: str


class _Answer(msgspec.Struct):
    accepted: int = 0
    rejected: list[dict[str, object]] = msgspec.field(default_factory=list)


_decode_answer = msgspec.json.Decoder(_Answer).decode


def retry_after_secs(header: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not header:
        return None
    try:
        return min(max(float(header), 0.0), _MAX_RETRY_AFTER_SECS)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError):
        return None
    return min(max(when - time.time(), 0.0), _MAX_RETRY_AFTER_SECS)


def backoff_secs(attempt: int, initial_secs: float, max_secs: float) -> float:
    """Exponential backoff with jitter: half fixed, half random, capped."""
    ceiling = min(max_secs, initial_secs * (2 ** min(attempt, 30)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class GatewayClient:
    """Posts batches of JSON-encoded events to ``POST /v1/events``. One thread at a time."""

    def __init__(
        self,
        policy: DeliveryPolicy,
        *,
        stop: threading.Event | None = None,
        transport: httpx.BaseTransport | None = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.policy = policy
        self._stop = stop or threading.Event()
        self._on_retry = on_retry
        self._compression: Compression = policy.compression
        self._zstd = zstandard.ZstdCompressor(level=3)
        headers = {"Content-Type": "application/json", "User-Agent": "courier-sdk"}
        if policy.api_key:
            headers["Authorization"] = f"Bearer {policy.api_key}"
        self._client = httpx.Client(
            base_url=policy.gateway_url.rstrip("/"),
            headers=headers,
            timeout=policy.request_timeout_secs,
            transport=transport,
        )
        self._failing = False

    def close(self) -> None:
        self._client.close()

    def deliver(self, events: Sequence[bytes]) -> list[EventRejection]:
        """Post ``events`` (each one JSON object) until every one is stored or rejected.

        Returns the rejections (indexes into ``events``). Raises
        :class:`DeliveryStopped` when ``stop`` is set before that.
        """
        if not events:
            return []
        return self._deliver(events, 0)

    def _deliver(self, events: Sequence[bytes], base: int) -> list[EventRejection]:
        outcome = self._post_until_answered(events)
        if isinstance(outcome, _Refused):
            if len(events) == 1:
                reason = f"refused alone with HTTP {outcome.status}: {outcome.message}"
                return [EventRejection(base, reason, outcome.status)]
            mid = len(events) // 2
            return self._deliver(events[:mid], base) + self._deliver(events[mid:], base + mid)
        out = []
        for r in outcome.rejected:
            index = r.get("index")
            if isinstance(index, int) and 0 <= index < len(events):
                out.append(EventRejection(base + index, str(r.get("error", "rejected")), 200))
        return out

    def _body(self, events: Sequence[bytes]) -> tuple[bytes, dict[str, str]]:
        body = b"".join(
            (b'{"sent_at":"', iso_utc(time.time()).encode(), b'","events":[', b",".join(events))
        )
        body += b"]}"
        if self._compression == "zstd":
            return self._zstd.compress(body), {"Content-Encoding": "zstd"}
        if self._compression == "gzip":
            c = zlib.compressobj(1, zlib.DEFLATED, 31)
            return c.compress(body) + c.flush(), {"Content-Encoding": "gzip"}
        return body, {}

    def _post_until_answered(self, events: Sequence[bytes]) -> _Answer | _Refused:
        attempt = 0
        while True:
            if self._stop.is_set():
                raise DeliveryStopped("the producer is stopping; the batch stays spooled")
            body, headers = self._body(events)
            delay: float | None
            try:
                resp = self._client.post("/v1/events", content=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = f"cannot reach the gateway at {self.policy.gateway_url}: {exc!r}"
                delay = None
            else:
                status = resp.status_code
                if 200 <= status < 300:
                    if self._failing:
                        log.info("gateway %s accepts events again", self.policy.gateway_url)
                        self._failing = False
                    try:
                        return _decode_answer(resp.content)
                    except msgspec.DecodeError:
                        log.warning("gateway answered %d with an unreadable body", status)
                        return _Answer()
                message = _error_message(resp)
                if status in _WHOLE_BATCH_REFUSALS:
                    if status == 415 and self._compression != "none":
                        log.warning(
                            "gateway refused %s bodies (%s); sending uncompressed",
                            self._compression,
                            message,
                        )
                        self._compression = "none"
                        continue
                    return _Refused(status, message)
                problem = f"gateway answered HTTP {status}: {message}"
                delay = (
                    retry_after_secs(resp.headers.get("retry-after"))
                    if status in (429, 503)
                    else None
                )
            if delay is None:
                delay = backoff_secs(
                    attempt, self.policy.backoff_initial_secs, self.policy.backoff_max_secs
                )
            if not self._failing:
                log.warning("%s; retrying the batch (with backoff) until it is accepted", problem)
                self._failing = True
            attempt += 1
            if self._on_retry is not None:
                self._on_retry(problem)
            if self._stop.wait(delay):
                raise DeliveryStopped("the producer is stopping; the batch stays spooled")


def _error_message(resp: httpx.Response) -> str:
    try:
        doc = resp.json()
    except ValueError:
        return resp.text[:500]
    if isinstance(doc, dict) and "error" in doc:
        return str(doc["error"])
    return resp.text[:500]


class MemoryDeliverer:
    """In-memory stand-in for :class:`GatewayClient` (for unit tests of code above it).

    Keeps every delivered event; ``reject`` decides per event (a reason, or None to accept).
    """

    def __init__(self, reject: Callable[[bytes], str | None] | None = None) -> None:
        self.events: list[bytes] = []
        self.batches = 0
        self._reject = reject

    def deliver(self, events: Sequence[bytes]) -> list[EventRejection]:
        self.batches += 1
        out = []
        for i, e in enumerate(events):
            reason = self._reject(e) if self._reject is not None else None
            if reason is None:
                self.events.append(e)
            else:
                out.append(EventRejection(i, reason, 200))
        return out
