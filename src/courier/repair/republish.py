"""Publish a stored message body again (``POST /v1/admin/republish/<Type>``).

Used to replay quarantined messages after a fix (:mod:`courier.repair.quarantine`).
The body and headers are published as they are, except the ``Nats-*`` headers
(the original message id and expectations): the message id is
``replay.<Type>.<original seq>``, so a retried call inside the stream's
duplicate window is not stored twice. The gateway answers after the publish
ack, i.e. once the message is durable (G1).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any

import msgspec

from courier.errors import MalformedRequestError
from courier.repair.target import RepairTarget
from courier.transport import PublishResult

_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")


class RepublishRequest(msgspec.Struct, forbid_unknown_fields=True):
    """One stored message (a quarantine record's fields): its original stream sequence,
    headers and body (base64). Published with the message id ``replay.<type>.<stream_seq>``."""

    stream_seq: Annotated[int, msgspec.Meta(ge=1)]
    body_base64: str
    headers: dict[str, str] = msgspec.field(default_factory=dict)


def parse_republish(body: bytes) -> tuple[RepublishRequest, bytes, dict[str, str]]:
    """The request, the decoded message body and the headers to publish with it."""
    try:
        request = msgspec.json.decode(body, type=RepublishRequest)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise MalformedRequestError(
            'body must be {"stream_seq": N, "headers": {...}, "body_base64": "..."} '
            f"(a quarantine record's fields): {exc}"
        ) from exc
    try:
        data = base64.b64decode(request.body_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedRequestError(f"body_base64 is not base64: {exc}") from exc
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        if not _HEADER_NAME.fullmatch(name) or any(c in value for c in "\r\n\0"):
            raise MalformedRequestError(f"header {name[:64]!r} is not a valid message header")
        if not name.lower().startswith("nats-"):
            headers[name] = value
    return request, data, headers


def replay_msg_id(event_type: str, stream_seq: int) -> str:
    return f"replay.{event_type}.{stream_seq}"


async def republish(
    target: RepairTarget,
    event_type: str,
    request: RepublishRequest,
    data: bytes,
    headers: dict[str, str],
) -> PublishResult:
    """Publish and wait for the stored ack (TransportError subclasses when not stored)."""
    return await target.republish(
        event_type, data, msg_id=replay_msg_id(event_type, request.stream_seq), headers=headers
    )


def republish_arguments(
    request: RepublishRequest, data: bytes, headers: dict[str, str]
) -> dict[str, Any]:
    """What the repair record keeps of a republish: never the body itself."""
    return {"stream_seq": request.stream_seq, "body_bytes": len(data), "headers": sorted(headers)}
