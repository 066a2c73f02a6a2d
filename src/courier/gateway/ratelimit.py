"""Per-key rate limits: a token bucket of events per API key.

Each key's bucket holds up to ``burst_events`` tokens and refills at
``events_per_sec``. A request is looked at twice:

1. before its body is read, :meth:`RateLimiter.check` refuses it (429) when
   the key's bucket is empty, so a flooding client costs no body reads;
2. once it is validated, :meth:`RateLimiter.charge` takes one token per event
   (valid or rejected: both are stored). A batch needs ``min(events, burst)``
   tokens to pass, so a batch larger than the burst is not refused forever;
   the bucket then goes into debt and the key waits for it to refill.

A refused request is not charged and nothing in it is accepted; 429 carries
``Retry-After``: the seconds until enough tokens are back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from courier.errors import RateLimitedError
from courier.service.auth import Principal


class TokenBucket:
    """Tokens refilling at ``rate_per_sec`` up to ``capacity`` (may go negative: debt)."""

    def __init__(self, rate_per_sec: float, capacity: int, now: float) -> None:
        self.rate_per_sec = rate_per_sec
        self.capacity = capacity
        self._tokens = float(capacity)
        self._at = now

    def tokens(self, now: float) -> float:
        elapsed = max(0.0, now - self._at)
        self._tokens = min(float(self.capacity), self._tokens + elapsed * self.rate_per_sec)
        self._at = now
        return self._tokens

    def wait_secs(self, needed: float, now: float) -> float:
        """Seconds until ``needed`` tokens are available (0 when they are)."""
        missing = needed - self.tokens(now)
        return 0.0 if missing <= 0 else missing / self.rate_per_sec

    def take(self, n: int, now: float) -> None:
        self.tokens(now)
        self._tokens -= n


class RateLimiter:
    """One token bucket per key name; keys without a limit pass untouched."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def _bucket(self, principal: Principal) -> TokenBucket | None:
        if principal.events_per_sec is None:
            return None
        bucket = self._buckets.get(principal.name)
        if bucket is None:
            bucket = TokenBucket(principal.events_per_sec, principal.burst_events, self._clock())
            self._buckets[principal.name] = bucket
        return bucket

    def check(self, principal: Principal) -> None:
        """Refuse (429) when the key's bucket is empty, before reading a body."""
        self._refuse_if_waiting(principal, needed=1)

    def charge(self, principal: Principal, events: int) -> None:
        """Take ``events`` tokens, or refuse the request (429) without taking any."""
        bucket = self._bucket(principal)
        if bucket is None or events == 0:
            return
        self._refuse_if_waiting(principal, needed=min(events, bucket.capacity))
        bucket.take(events, self._clock())

    def _refuse_if_waiting(self, principal: Principal, needed: int) -> None:
        bucket = self._bucket(principal)
        if bucket is None:
            return
        wait = bucket.wait_secs(needed, self._clock())
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise RateLimitedError(
                f"API key {principal.name!r} is over its rate limit of "
                f"{bucket.rate_per_sec:g} events/s (burst {bucket.capacity}); nothing was "
                f"accepted: retry the whole batch after {retry}s",
                retry,
            )
