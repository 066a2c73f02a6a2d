"""Redeliver a type from a stream sequence or time (DESIGN §10, ``courier repair redeliver``).

The type's durable ``writer`` consumer is re-pointed to deliver again from the
start (:func:`courier.transport.repoint.repoint_writer`: refused when that data
is no longer retained, or when it would skip unacked messages). Writers then
receive those messages again and stage them like any others.

Why this is safe — closed buckets never change (G4), every event stays exactly
once (G2):

- a redelivered event of a bucket that is still open is staged into that
  bucket again, and the close drops the repeated id (step 3 of the close);
- a redelivered event of an already-closed bucket is staged into that closed
  bucket's staging directory. The closer never reopens a closed bucket: it
  picks such stray files up as *skewed* inputs of the oldest open bucket
  (step 2) and drops every id already present in the closed bucket the file
  came from, or in the bucket before the open one (step 3). So events still
  present in their closed bucket are dropped;
- events missing from a closed bucket (a part file deleted or lost) are not
  found there, so they land once in the oldest open bucket, counted in its
  manifest's ``skewed_in``;
- the watermark is the ``published_at`` of the writer consumer's oldest
  unacked message, so it moves back to the start of the redelivery: open
  buckets wait until every redelivered message is staged and acked, and no
  bucket closes without them.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from courier.errors import MalformedRequestError
from courier.model import parse_time
from courier.repair.target import RepairTarget
from courier.transport import Repointed


class RedeliverRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Where to redeliver from: exactly one of ``from_seq`` (a stream sequence) and
    ``from_time`` (RFC 3339; the first message published at or after it)."""

    from_seq: Annotated[int, msgspec.Meta(ge=1)] | None = None
    from_time: str | None = None

    def start(self) -> tuple[int | None, float | None]:
        """(from_seq, from_time as epoch seconds); MalformedRequestError unless exactly one."""
        if (self.from_seq is None) == (self.from_time is None):
            raise MalformedRequestError(
                'give exactly one of "from_seq" (a stream sequence) or "from_time" (RFC 3339)'
            )
        if self.from_seq is not None:
            return self.from_seq, None
        assert self.from_time is not None
        try:
            return None, parse_time(self.from_time)
        except (ValueError, OverflowError) as exc:
            raise MalformedRequestError(
                f"from_time {self.from_time[:64]!r} is not an RFC 3339 time"
            ) from exc

    def arguments(self) -> dict[str, Any]:
        return {k: v for k, v in msgspec.to_builtins(self).items() if v is not None}


def parse_redeliver(body: bytes) -> RedeliverRequest:
    try:
        request = msgspec.json.decode(body, type=RedeliverRequest)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise MalformedRequestError(
            f'body must be {{"from_seq": N}} or {{"from_time": "<RFC 3339>"}}: {exc}'
        ) from exc
    request.start()
    return request


async def redeliver(target: RepairTarget, event_type: str, request: RedeliverRequest) -> Repointed:
    """Re-point ``event_type``'s writer consumer as ``request`` asks (see the module docstring)."""
    from_seq, from_time = request.start()
    return await target.redeliver(event_type, from_seq=from_seq, from_time=from_time)


def redeliver_result(r: Repointed) -> tuple[dict[str, int], dict[str, Any]]:
    """(counts, result) of a redelivery for its repair record."""
    counts = {"messages": r.messages}
    result = {
        "from_seq": r.from_seq,
        "stream_first_seq": r.stream_first_seq,
        "stream_last_seq": r.stream_last_seq,
        "previous_ack_floor_seq": r.previous_ack_floor_seq,
    }
    return counts, result
