"""API keys: how they are made, stored, presented and checked (DESIGN §8).

A key is 32 random bytes (``ck_`` + base64url, from :func:`new_key`). Settings
hold only its SHA-256. A plain, fast hash is enough here because the keys are
machine-made with 256 bits of entropy: nobody can brute-force a preimage, so a
slow KDF (scrypt, pbkdf2) would only cost every request time without adding
safety, and a salt is pointless without guessable inputs. A lookup by digest
also means the presented key is never compared byte by byte with a stored one.

Clients present a key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

:class:`KeyRing` answers "who is this?" for a request; :class:`RequireKey` is
a Starlette (pure ASGI) middleware that guards routes with it, for any
service: the gateway's admin routes and the dashboard use it. Nothing here
ever logs a key or echoes it in an answer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from courier.errors import ForbiddenError, UnauthorizedError
from courier.settings import AuthSettings

log = logging.getLogger("courier.service.auth")

KEY_PREFIX = "ck_"
ALL_TYPES = "*"


def new_key() -> str:
    """A new random API key (256 bits); show it once, store only :func:`hash_key` of it."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The lowercase hex SHA-256 of a key, as written in the ``[auth]`` settings."""
    return hashlib.sha256(key.encode("utf-8", errors="surrogateescape")).hexdigest()


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries, if any: ``Authorization: Bearer <key>``, ``X-API-Key``,
    or HTTP Basic with the key as the password (so a browser can open the dashboard)."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        if scheme.lower() == "basic" and value.strip():
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return None
            password = decoded.partition(":")[2]
            return password or None
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a request: a configured key, the admin key, or anyone (auth off)."""

    name: str
    #: Event types this principal may send; None = all.
    types: frozenset[str] | None
    admin: bool
    events_per_sec: float | None
    burst_events: int

    def may_send(self, event_type: str) -> bool:
        return self.types is None or event_type in self.types

    def forbidden_types(self, event_types: Iterable[str]) -> list[str]:
        """The event types of ``event_types`` this principal may not send, sorted."""
        return sorted(t for t in set(event_types) if not self.may_send(t))


class KeyRing:
    """The configured keys, looked up by the SHA-256 of the presented key."""

    def __init__(self, settings: AuthSettings) -> None:
        self.enabled = settings.enabled
        self._by_hash: dict[str, Principal] = {}
        for k in settings.keys:
            self._by_hash[k.sha256] = Principal(
                name=k.name,
                types=None if ALL_TYPES in k.types else frozenset(k.types),
                admin=False,
                events_per_sec=k.events_per_sec or settings.events_per_sec,
                burst_events=k.burst_events or settings.burst_events,
            )
        if settings.admin_key_sha256 is not None:
            self._by_hash[settings.admin_key_sha256] = Principal(
                "admin", None, True, settings.events_per_sec, settings.burst_events
            )
        #: Everyone, when auth is off (no keys configured).
        self.anonymous = Principal(
            "anonymous", None, True, settings.events_per_sec, settings.burst_events
        )
        self.admin_configured = settings.admin_key_sha256 is not None

    def identify(self, headers: Mapping[str, str]) -> Principal:
        """The principal of a request; UnauthorizedError without a key the ring knows."""
        if not self.enabled:
            return self.anonymous
        key = presented_key(headers)
        if key is None:
            raise UnauthorizedError(
                "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
            )
        return self.lookup(key)

    def lookup(self, key: str) -> Principal:
        """The principal of a key presented some other way (e.g. a Segment write key
        in the body); UnauthorizedError when the ring does not know it."""
        if not self.enabled:
            return self.anonymous
        principal = self._by_hash.get(hash_key(key))
        if principal is None:
            raise UnauthorizedError("the API key is not valid; ask an operator for a key")
        return principal

    def require_admin(self, headers: Mapping[str, str]) -> Principal:
        """The admin principal of a request; 401 without a known key, 403 for another key."""
        principal = self.identify(headers)
        if not principal.admin:
            if not self.admin_configured:
                raise ForbiddenError(
                    "this route needs the admin key and none is configured "
                    "(set auth.admin_key_sha256)"
                )
            raise ForbiddenError(
                f"API key {principal.name!r} is not the admin key; this route needs it"
            )
        return principal


class RequireKey:
    """ASGI middleware: HTTP requests under ``paths`` need a known key (or the admin key).

    Usage (any Starlette app)::

        app = Starlette(routes=..., middleware=[
            Middleware(RequireKey, keyring=KeyRing(settings.auth), admin=True,
                       exempt=("/healthz", "/metrics")),
        ])

    A request that passes has its :class:`Principal` in ``scope["state"]["principal"]``
    (``request.state.principal``); with auth off (no keys configured) every request
    passes as ``anonymous``. Failures answer
    ``401``/``403`` with a JSON ``{"error": ...}`` and ``WWW-Authenticate: <challenge>`` (``Bearer``; pages for browsers pass
    ``Basic realm=...`` so the browser asks for the key as a password);
    the key is never logged. ``on_failure(status)`` lets the app count them.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        keyring: KeyRing,
        admin: bool = False,
        paths: tuple[str, ...] = ("/",),
        exempt: tuple[str, ...] = (),
        on_failure: Callable[[int], None] | None = None,
        challenge: str = "Bearer",
    ) -> None:
        self.app = app
        self.challenge = challenge
        self.keyring = keyring
        self.admin = admin
        self.paths = paths
        self.exempt = exempt
        self.on_failure = on_failure

    def guards(self, path: str) -> bool:
        return path.startswith(self.paths) and path not in self.exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.guards(scope["path"]):
            await self.app(scope, receive, send)
            return
        if not self.keyring.enabled:
            scope.setdefault("state", {})["principal"] = self.keyring.anonymous
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            principal = (
                self.keyring.require_admin(headers)
                if self.admin
                else self.keyring.identify(headers)
            )
        except (UnauthorizedError, ForbiddenError) as exc:
            if self.on_failure is not None:
                self.on_failure(exc.status)
            await _refuse(send, exc.status, str(exc), self.challenge)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, message: str, challenge: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", challenge.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
