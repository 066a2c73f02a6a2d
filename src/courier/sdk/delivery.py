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

Several gateways (several DCs, DESIGN §13): ``gateway_url`` may list URLs
separated by commas, the preferred one (the producer's own DC) first.

- Order: a batch goes to the current gateway, which starts as the first. A
  failure that says "this gateway cannot take it now" (connection error,
  timeout, 5xx including 503, 401/403/404) moves to the next URL in the list
  order, wrapping around, and the batch is resent there **at once**.
- Back-off: only after a whole round (every URL failed once in a row) does the
  sender wait: ``Retry-After`` of the last answer if it gave one, else the
  exponential backoff above, whose exponent counts rounds, not requests. With
  one URL this is exactly the single-gateway policy.
- A 429 (rate limit) is not an outage: the sender waits ``Retry-After`` and
  stays on that gateway. Whole-batch refusals (400/413/415/422) are final on
  any gateway and never fail over.
- Stickiness and failback: after a failover the sender stays on the gateway
  that answered; the first batch started ``failback_secs`` after it left the
  first URL goes to the first URL again (and fails over again at once if it
  is still down).
- Exactly once: a batch whose answer was lost (timeout) may be stored by the
  first DC and again by the next. Both copies carry the same event ids and
  reach the delivery region, where the closer drops the later copy within its
  dedup horizon (G2), however late the first DC's copy arrives.
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

    #: One URL, or several separated by commas in order of preference (failover).
    gateway_url: str = "http://127.0.0.1:8080"
    compression: Compression = "zstd"
    request_timeout_secs: float = 30.0
    backoff_initial_secs: float = 0.1
    backoff_max_secs: float = 30.0
    #: Sent as ``Authorization: Bearer <key>`` when set.
    api_key: str | None = None
    #: After a failover, batches go back to the first gateway this long after leaving it.
    failback_secs: float = 300.0

    @property
    def gateway_urls(self) -> list[str]:
        """The gateways in order of preference."""
        return gateway_urls(self.gateway_url)


def gateway_urls(value: str) -> list[str]:
    """``"http://a:8080, http://b:8080/"`` -> ``["http://a:8080", "http://b:8080"]``."""
    urls = [u.strip().rstrip("/") for u in value.split(",") if u.strip()]
    if not urls:
        raise ValueError(f"no gateway URL in {value!r}")
    return urls


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
        self._urls = policy.gateway_urls
        self._current = 0
        #: monotonic time the sender left the first gateway (None: on it).
        self._left_first_at: float | None = None
        self._client = httpx.Client(
            headers=headers,
            timeout=policy.request_timeout_secs,
            transport=transport,
        )
        self._failing = False

    @property
    def gateway_url(self) -> str:
        """The gateway batches go to now."""
        return self._urls[self._current]

    def _fail_over(self, problem: str) -> None:
        """Move to the next gateway in the list (no-op with one)."""
        if len(self._urls) == 1:
            return
        before = self.gateway_url
        self._current = (self._current + 1) % len(self._urls)
        if self._current == 0:
            self._left_first_at = None
        elif self._left_first_at is None:
            self._left_first_at = time.monotonic()
        level = logging.DEBUG if self._failing else logging.WARNING
        log.log(level, "%s; failing over from %s to %s", problem, before, self.gateway_url)

    def _maybe_fail_back(self) -> None:
        if self._current == 0 or self._left_first_at is None:
            return
        if time.monotonic() - self._left_first_at >= self.policy.failback_secs:
            log.info("trying the first gateway %s again", self._urls[0])
            self._current = 0
            self._left_first_at = None

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
        attempt = 0  # whole rounds failed (every gateway once)
        tried = 0  # gateways failed in a row in this round
        self._maybe_fail_back()
        while True:
            if self._stop.is_set():
                raise DeliveryStopped("the producer is stopping; the batch stays spooled")
            body, headers = self._body(events)
            delay: float | None
            url = self.gateway_url
            outage = True
            try:
                resp = self._client.post(f"{url}/v1/events", content=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = f"cannot reach the gateway at {url}: {exc!r}"
                delay = None
            else:
                status = resp.status_code
                if 200 <= status < 300:
                    if self._failing:
                        log.info("gateway %s accepts events again", url)
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
                problem = f"gateway {url} answered HTTP {status}: {message}"
                delay = (
                    retry_after_secs(resp.headers.get("retry-after"))
                    if status in (429, 503)
                    else None
                )
                outage = status != 429
            if outage:
                tried += 1
                self._fail_over(problem)
                if tried < len(self._urls):
                    if self._on_retry is not None:
                        self._on_retry(problem)
                    continue  # resend at once to the next gateway
                tried = 0
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
