"""JetStream pull fetch with a reply subscription of our own: less Python per message.

``PullSubscription.fetch`` of nats-py waits for each message of a batch with
``Subscription.next_msg``, which creates a task, an ``asyncio.wait_for`` and a
uuid4 name per message, and the writer and the auditor fetch every message of
the stream that way (issue 13). :class:`LeanPull` makes the same exchange with
the JetStream pull API (``$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>``) and
one callback subscription:

1. Once, on first use, it subscribes to ``<inbox>.*`` (a wildcard under a fresh
   inbox); nats-py re-subscribes it after a reconnect.
2. Each pull request carries the reply subject ``<inbox>.<n>``, ``n`` a counter
   never reused. The server delivers that request's messages, and the status
   that ends it, to that subject.
3. The callback appends every message to one list, whichever request brought
   it: a message delivered for a request that was given up on is still a
   delivery (redelivered after ``ack_wait`` if nobody acks it), so the next
   fetch returns it rather than leave it to time out. A status ends only its
   own request; one of an older request is dropped.
4. A fetch first asks with ``no_wait`` for what is there now, as nats-py does.
   If that brings nothing, it asks again with ``expires`` set to what is left of
   the wait, and returns when the batch is full or the request expired (again as
   nats-py does); a fetch that gets no message returns an empty list ("idle", as
   nats-py's empty fetch).

Statuses (ADR-13 of nats-io/nats-architecture-and-design): ``404`` no messages
and ``408`` request expired end a request quietly. ``409`` means the request
was refused or cut short (consumer deleted, leadership change, too many
waiting requests, ...) and ``503`` that no consumer answered (it does not
exist, or JetStream is down); both are raised as :class:`PullStatusError` with
what the server said, so the caller logs it and retries after a pause.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

#: The header nats-py makes of an inline status line (``NATS/1.0 404 No Messages``).
_STATUS = "Status"
_DESCRIPTION = "Description"
#: End a request and say nothing: no messages now (404), the request expired (408).
_QUIET_END = frozenset({"404", "408"})
#: No subscriber for the pull request's subject: no such consumer, or no JetStream.
_NO_RESPONDERS = "503"
#: Idle heartbeats are only sent when asked for; ignored if one ever comes.
_HEARTBEAT = "100"
#: How long past the request's own expiry a fetch waits for the server's 408, in
#: case the connection dropped the request (then no status ever comes).
_EXPIRY_GRACE_SECS = 0.25


class PullStatusError(Exception):
    """The server ended a pull request with a status other than "no messages" or
    "expired" (``409 Consumer Deleted``, ``409 Leadership Change``, ...)."""


class LeanPull:
    """Fetches batches from one durable pull consumer on one connection, one fetch at
    a time (the writer and the auditor each run one fetch loop per consumer)."""

    def __init__(self, nc: NatsClient, stream: str, durable: str) -> None:
        self._nc = nc
        # The Transport uses no JetStream domain, so the API is under its default prefix.
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._prefix: str | None = None
        self._prefix_len = 0
        self._tokens = itertools.count(1)
        #: Messages delivered and not yet returned by a fetch, in arrival order.
        self._ready: list[Msg] = []
        #: The reply token of the request a fetch is waiting on, its size, and the
        #: future that wakes the fetch (set when enough arrived or it ended).
        self._token = ""
        self._want = 0
        self._woken: asyncio.Future[str | None] | None = None
        self._sub: Subscription | None = None

    async def fetch(self, batch: int, wait_secs: float) -> list[Msg]:
        """Up to ``batch`` messages; an empty list when none arrived within ``wait_secs``."""
        if self._prefix is None:
            await self._start()  # step 1
        if len(self._ready) >= batch:
            return self._take(batch)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_secs
        # Step 4: what is there now (no expires with no_wait: the server would
        # otherwise hold the request open until it expires).
        await self._ask(batch, {"batch": batch - len(self._ready), "no_wait": True}, None)
        if self._ready:
            return self._take(batch)
        left = deadline - loop.time()
        if left <= 0.001:
            return []
        expires_ns = int(left * 1e9)
        await self._ask(batch, {"batch": batch, "expires": expires_ns}, left)
        return self._take(batch)

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.unsubscribe()

    async def _start(self) -> None:
        prefix = self._nc.new_inbox() + "."
        self._sub = await self._nc.subscribe(prefix + "*", cb=self._on_msg, pending_bytes_limit=-1)
        self._prefix_len = len(prefix)
        self._prefix = prefix

    async def _ask(self, batch: int, request: dict[str, object], wait_secs: float | None) -> None:
        """Send one pull request (step 2) and wait until it ended, ``batch`` messages are
        ready, or (a lingering request) its expiry plus a grace passed."""
        assert self._prefix is not None  # started by fetch
        loop = asyncio.get_running_loop()
        token = str(next(self._tokens))
        woken: asyncio.Future[str | None] = loop.create_future()
        self._token, self._want, self._woken = token, batch, woken
        timer = None
        try:
            await self._nc.publish(
                self._next_subject, json.dumps(request).encode(), reply=self._prefix + token
            )
            if wait_secs is None:
                # A no_wait request always ends with messages or a status; the bound
                # only guards a connection that dropped it.
                wait_secs = 5.0
            timer = loop.call_later(wait_secs + _EXPIRY_GRACE_SECS, _wake, woken, None)
            refused = await woken
        finally:
            if timer is not None:
                timer.cancel()
            self._token, self._woken = "", None
        if refused is not None:
            raise PullStatusError(refused)

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        status = headers.get(_STATUS) if headers else None
        if status is None:
            ready = self._ready
            ready.append(msg)  # step 3
            if len(ready) >= self._want and self._woken is not None:
                _wake(self._woken, None)
            return
        if status == _HEARTBEAT or msg.subject[self._prefix_len :] != self._token:
            return  # a heartbeat, or the end of a request no fetch waits on any more
        woken = self._woken
        if woken is None:
            return
        if status in _QUIET_END:
            _wake(woken, None)
        elif status == _NO_RESPONDERS:
            _wake(
                woken,
                f"no consumer answered the pull request (503) on {self._next_subject}: "
                "it does not exist (run `courier provision`) or JetStream is unavailable",
            )
        else:
            description = headers.get(_DESCRIPTION, "") if headers else ""
            _wake(woken, f"pull request refused: {status} {description}".strip())

    def _take(self, batch: int) -> list[Msg]:
        ready = self._ready
        if len(ready) <= batch:
            self._ready = []
            return ready
        self._ready = ready[batch:]
        return ready[:batch]


def _wake(woken: asyncio.Future[str | None], refused: str | None) -> None:
    if not woken.done():
        woken.set_result(refused)
