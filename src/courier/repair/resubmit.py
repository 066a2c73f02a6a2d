"""Re-submit rejected events after a fix (``courier repair replay-invalid``).

Rows of the ``_invalid`` dataset keep each rejected event's ``raw`` JSON text.
After a schema change (or a fixed producer bug), the CLI reads the closed
``_invalid`` buckets of a time range, takes the rows of one type and posts
their raw text to ``POST /v1/admin/resubmit/{type}``. The gateway runs them
through the same ingest as ``POST /v1/events`` (decoded and validated against
the *current* schema, stored, answered after the publish acks) and records the
call in the repair log with the accepted and still-rejected counts.

Events that still fail are rejected again and, like any rejection, stored in
``_invalid`` once more with the new reason (G6: nothing dropped silently).
Events with an ``id`` are deduplicated downstream if a replay is repeated
(within the same or the next bucket); events sent without one get a new id
each time, so repeating a replay would duplicate them: the CLI counts them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from courier.errors import MalformedRequestError

#: Rejections kept in the repair record (the answer carries them all).
RECORDED_REJECTIONS = 100


class ResubmitRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The raw events to validate again, and the ``_invalid`` range they came from."""

    events: list[msgspec.Raw]
    from_time: str | None = None
    to_time: str | None = None

    def arguments(self) -> dict[str, Any]:
        args: dict[str, Any] = {"events": len(self.events)}
        if self.from_time is not None:
            args["from_time"] = self.from_time
        if self.to_time is not None:
            args["to_time"] = self.to_time
        return args


def parse_resubmit(body: bytes) -> tuple[ResubmitRequest, bytes]:
    """The request and an ingest body (``{"events": [...]}``) holding the raw events as sent."""
    try:
        request = msgspec.json.decode(body, type=ResubmitRequest)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise MalformedRequestError(
            f'body must be {{"events": [<event>, ...], "from_time"?, "to_time"?}}: {exc}'
        ) from exc
    return request, b'{"events":[' + b",".join(bytes(e) for e in request.events) + b"]}"
