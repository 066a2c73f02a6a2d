"""The Segment-compatible routes: another front door to the gateway's contract (DESIGN §8).

``POST /v1/batch``, ``/v1/{identify,track,page,screen,group,alias}`` and
analytics.js's ``/v1/{t,i,p,s,g,a,b}`` (sent as ``text/plain``). A request goes
through the same steps as ``POST /v1/events``: auth, rate limit, bounded body
read (gzip/zstd), validation by the registry, group commit, 2xx only after the
transport stored every event. What differs is what makes Segment's clients
behave right, as they retry 408/410/429/460 and 5xx but drop a batch on any
other 4xx:

* An invalid call inside a batch never fails the batch: it is stored in
  ``_invalid`` with its reason and counted, and the answer is 200. That holds for
  a type the key may not send too (reason ``forbidden``), where ``/v1/events``
  refuses the whole batch with 403: a Segment client would drop its valid
  events with it.
* Only a body that is not JSON of the right shape (400), too large (413), of
  another media type or encoding (415), without a known write key (401) is
  refused whole; 429 and 503 carry ``Retry-After`` and nothing is stored.
* The write key is the Courier API key (same hashed lookup, same per-type
  permissions): HTTP Basic ``base64("<key>:")`` as Segment's libraries send it,
  Bearer, ``X-API-Key`` or ``writeKey`` in the body (analytics.js).
* Answers carry ``Access-Control-Allow-Origin: *`` so that browsers running
  analytics.js can read them (write keys are public in a web page anyway), and
  ``X-RateLimit-Reset`` next to ``Retry-After``: analytics.js waits by that one.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from courier.errors import RequestError, TransportError, UnauthorizedError, UnsupportedMediaError
from courier.gateway.body import content_encoding, read_body
from courier.gateway.metrics import GatewayMetrics
from courier.gateway.ratelimit import RateLimiter
from courier.gateway.responses import error_response, json_response, refused, unavailable
from courier.gateway.segment.mapping import CALL_TYPES, SHORT_PATHS, Call, Translator, parse
from courier.gateway.service import EventService
from courier.service.auth import KeyRing, Principal, presented_key
from courier.settings import Settings

#: Media types Segment's clients send: analytics.js uses text/plain to avoid a CORS preflight.
_MEDIA_TYPES = ("", "application/json", "text/plain")
# A browser lets analytics.js read the wait of a 429 only from exposed headers.
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Retry-After, X-RateLimit-Reset",
}
_PREFLIGHT = {
    **_CORS,
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Content-Encoding, X-Retry-Count",
    "Access-Control-Max-Age": "86400",
}


class GatewayParts(Protocol):
    """What these routes use of the gateway app (its ``service`` is None until started)."""

    settings: Settings
    metrics: GatewayMetrics
    service: EventService | None
    keyring: KeyRing
    limiter: RateLimiter


def write_key(headers: Mapping[str, str]) -> str | None:
    """The key a Segment client sends: HTTP Basic with the key as the user name
    (``base64("<key>:")``) or, as Courier's own tools send it, as the password;
    Bearer or ``X-API-Key``."""
    authorization = (headers.get("authorization") or "").strip()
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        user, _, password = decoded.partition(":")
        return password or user or None  # Segment: "<key>:"; Courier's own tools: ":<key>"
    return presented_key(headers)


class SegmentRoutes:
    """The Segment-compatible routes of one gateway app; see the module doc."""

    def __init__(self, gateway: GatewayParts) -> None:
        self._gw = gateway

    def routes(self) -> list[Route]:
        paths: list[tuple[str, Call | None]] = [("/v1/batch", None), ("/v1/b", None)]
        paths += [(f"/v1/{call}", call) for call in CALL_TYPES]
        paths += [(f"/v1/{short}", call) for short, call in SHORT_PATHS.items()]
        out = []
        for path, call in paths:
            out.append(Route(path, self._endpoint(call), methods=["POST"]))
            out.append(Route(path, _preflight, methods=["OPTIONS"]))
        return out

    def _endpoint(self, call: Call | None) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            response = await self._post(request, call, dt.datetime.now(dt.UTC))
            response.headers.update(_CORS)
            retry_after = response.headers.get("Retry-After")
            if retry_after is not None:
                # analytics.js waits out a 429 by this header (seconds), not Retry-After.
                response.headers["X-RateLimit-Reset"] = retry_after
            self._gw.metrics.request(response.status_code, time.perf_counter() - started)
            return response

        return endpoint

    async def _post(
        self, request: Request, call: Call | None, received_at: dt.datetime
    ) -> Response:
        gw = self._gw
        limits = gw.settings.gateway
        try:
            key = write_key(request.headers)
            # 401 before anything else when a header carries the key; a key in the
            # body (analytics.js) can only be checked once the body is read.
            principal: Principal | None = None
            if not gw.keyring.enabled:
                principal = gw.keyring.anonymous
            elif key is not None:
                principal = gw.keyring.lookup(key)
            _check_media_type(request.headers.get("content-type"))
            encoding = content_encoding(request.headers.get("content-encoding"))
            service = gw.service
            if service is None:
                return unavailable(limits, "the gateway is starting")
            service.check_available()
            if principal is not None:
                gw.limiter.check(principal)
            body = await read_body(
                request.stream(),
                content_length=request.headers.get("content-length"),
                encoding=encoding,
                max_body_bytes=limits.max_body_bytes,
                timeout_secs=limits.body_read_timeout_secs,
            )
            envelope = parse(body, call, limits)
            if principal is None:
                if not envelope.write_key:
                    raise UnauthorizedError(
                        "a write key is required: configure the Segment client's write key "
                        "with a Courier API key (sent as HTTP Basic), or send `writeKey`"
                    )
                principal = gw.keyring.lookup(envelope.write_key)
                gw.limiter.check(principal)
            sender: Principal = principal
            translator = Translator(gw.settings.segment, limits, sender)
            result = await service.ingest_with(
                lambda validator: translator.translate(envelope, call, validator),
                received_at,
                # Every stored event costs a token, valid or rejected (gateway/ratelimit.py).
                admit=lambda b: gw.limiter.charge(sender, b.accepted + len(b.rejections)),
            )
        except RequestError as exc:
            return refused(exc)
        except ClientDisconnect:
            return error_response(400, "the client disconnected before sending the whole body")
        except TransportError as exc:
            return unavailable(limits, f"events could not be stored: {exc}")
        rejected = [
            {"index": r.index, "id": r.id, "error": r.error}
            if r.id is not None
            else {"index": r.index, "error": r.error}
            for r in result.rejections
        ]
        return json_response({"success": True, "accepted": result.accepted, "rejected": rejected})


def _check_media_type(content_type: str | None) -> None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in _MEDIA_TYPES:
        raise UnsupportedMediaError(
            f"Content-Type {content_type!r} is not supported here; Segment's API takes "
            "application/json (or text/plain from analytics.js)"
        )


async def _preflight(request: Request) -> Response:
    """The CORS preflight of a browser posting JSON with an Authorization header."""
    return Response(status_code=204, headers=_PREFLIGHT)
