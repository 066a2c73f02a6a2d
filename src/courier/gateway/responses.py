"""JSON answers of the gateway's routes, shared by the ingest, schema and repair routes."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from courier.errors import RequestError
from courier.gateway.body import read_body
from courier.settings import GatewaySettings

encode_json = msgspec.json.Encoder().encode


class RejectedEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An event rejected for good, with the reason (it is stored in ``_invalid``): do not
    retry it. ``index`` is its position in the batch; ``id`` is absent when it had none."""

    index: int
    id: str | None = None
    error: str


class Accepted(msgspec.Struct):
    """The answer to a batch: every accepted event is stored durably."""

    accepted: int
    rejected: list[RejectedEvent]


class ErrorAnswer(msgspec.Struct, omit_defaults=True):
    """A request refused or not done: what happened, to what, and what to do next."""

    error: str
    #: The repair record of a refused repair call.
    repair_id: str | None = None


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(encode_json(doc), status, headers=headers, media_type="application/json")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(ErrorAnswer(message), status, headers)


def refused(exc: RequestError, repair_id: str | None = None) -> Response:
    """The answer to a request refused as a whole (4xx), with the headers its status needs."""
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    retry_after = getattr(exc, "retry_after_secs", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return json_response(ErrorAnswer(str(exc), repair_id), exc.status, headers)


#: What the client of a route should do after a 503 (``{secs}``: its Retry-After).
RETRY_BATCH = (
    "nothing was accepted: retry the whole batch after {secs}s (the events' ids make the "
    "retry safe)"
)
RETRY_READ = "retry after {secs}s"
RETRY_SCHEMA_PUT = "retry the PUT after {secs}s (applying the same schema again is safe)"


def unavailable(limits: GatewaySettings, what: str, then: str = RETRY_BATCH) -> Response:
    """503 with ``Retry-After``: ``what`` could not be done now; ``then`` says how to retry."""
    retry = str(limits.retry_after_secs)
    return error_response(503, f"{what}; {then.format(secs=retry)}", {"Retry-After": retry})


async def read_admin_body(request: Request, limits: GatewaySettings) -> bytes:
    """The plain (uncompressed) body of an admin request, within the body size and deadline."""
    return await read_body(
        request.stream(),
        content_length=request.headers.get("content-length"),
        encoding="identity",
        max_body_bytes=limits.max_body_bytes,
        timeout_secs=limits.body_read_timeout_secs,
    )
