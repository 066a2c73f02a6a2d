"""Decode and validate a batch of events against the registered types.

Fast path: one msgspec call decodes and validates the whole batch into the
types' event Structs (a tagged union on ``type``). Only when that fails, the
slow path splits the batch into raw events and decodes each alone, to tell
the client which events are wrong and why (messages name the field, e.g.
``Expected `int`, got `str` - at `$.data.ms_played```). The valid events of a
batch with errors are still accepted; the rest become rejections.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional, Union

import msgspec

from courier.errors import MalformedRequestError, RequestTooLargeError
from courier.gateway.body import BodyFormat, check_depth
from courier.model import INVALID_TYPE, MAX_ID_BYTES
from courier.schema import CompiledType
from courier.settings import GatewaySettings

#: Why an event was rejected; the ``reason`` label of the rejection metric.
#: ``forbidden``: the API key may not send the event's type (front doors that reject
#: per event rather than refusing the whole batch with 403, e.g. gateway/segment/).
RejectReason = Literal["invalid", "unknown_type", "too_large", "forbidden"]
REJECT_REASONS: tuple[RejectReason, ...] = ("invalid", "unknown_type", "too_large", "forbidden")

#: The batch's ``sent_at``: an RFC 3339 time with a time zone, or null.
SENT_AT = Optional[Annotated[dt.datetime, msgspec.Meta(tz=True)]]  # noqa: UP045
_LINE_BREAKS = re.compile(rb"\s*\n\s*")
#: A ``\uD800``-``\uDFFF`` escape that is not half of a pair (after an even run of
#: backslashes, so ``\\ud800`` is left alone). JSON's grammar allows it, but it is
#: not Unicode, and msgspec refuses the whole document over it.
_LONE_SURROGATE = re.compile(
    rb"(?<!\\)((?:\\\\)*)"
    rb"(\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)
#: What a lone surrogate escape becomes: a byte that is never valid UTF-8, so the
#: event holding it is rejected alone like any event with invalid UTF-8.
_NOT_UTF8 = b"\xff"


def mark_lone_surrogates(body: bytes) -> bytes:
    """``body`` with each lone surrogate escape replaced by a byte that is never UTF-8,
    so that the JSON parses and only the events holding one are rejected."""
    return _LONE_SURROGATE.sub(rb"\1" + _NOT_UTF8, body)


def batch_struct(event: Any) -> type[msgspec.Struct]:
    """The body of ``POST /v1/events``, with ``event`` as the type of each event."""
    return msgspec.defstruct(
        "Batch",
        [("events", list[event]), ("sent_at", SENT_AT, None)],
        forbid_unknown_fields=True,
    )


class _RawBatch(msgspec.Struct, forbid_unknown_fields=True):
    events: list[msgspec.Raw]
    sent_at: SENT_AT = None


class _Probe(msgspec.Struct):
    """What can be read from any JSON object to describe a rejected event."""

    type: Any = None
    id: Any = None


@dataclass(slots=True)
class Rejection:
    index: int
    id: str | None
    error: str
    reason: RejectReason
    #: The event's ``type`` when it was a string (for the ``_invalid`` dataset).
    event_type: str | None
    raw: bytes


@dataclass(slots=True)
class DecodedBatch:
    """A validated batch: the valid events grouped by type, in batch order, and the rest."""

    sent_at: dt.datetime | None
    valid: dict[str, list[msgspec.Struct]] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(len(v) for v in self.valid.values())


class Validator:
    """Decoders for one snapshot of the registry (rebuild it when the snapshot changes)."""

    def __init__(self, types: Mapping[str, CompiledType], limits: GatewaySettings) -> None:
        self._limits = limits
        self._types = {n: t for n, t in types.items() if n != INVALID_TYPE}
        self._names = {t.event_struct: n for n, t in self._types.items()}
        self._one = {n: msgspec.json.Decoder(t.event_struct) for n, t in self._types.items()}
        self._batch: msgspec.json.Decoder[Any] | None = None
        self._lines: msgspec.json.Decoder[Any] | None = None
        if self._types:
            structs = tuple(t.event_struct for t in self._types.values())
            union: Any = Union[structs]  # noqa: UP007 - built at runtime
            self._batch = msgspec.json.Decoder(batch_struct(union))
            self._lines = msgspec.json.Decoder(list[union])
        self._raw_batch = msgspec.json.Decoder(_RawBatch)
        self._raw_list = msgspec.json.Decoder(list[msgspec.Raw])
        self._probe = msgspec.json.Decoder(_Probe)

    def decode(self, body: bytes, fmt: BodyFormat) -> DecodedBatch:
        """Validate a decompressed body. Raises MalformedRequestError (400) or
        RequestTooLargeError (413) when the batch as a whole is unacceptable."""
        if fmt is BodyFormat.NDJSON:
            return self._decode_lines(body)
        return self._decode_json(body)

    # -- application/json -------------------------------------------------------

    def _decode_json(self, body: bytes) -> DecodedBatch:
        if self._batch is not None:
            try:
                batch = self._batch.decode(body)
            except msgspec.ValidationError:
                pass  # some event is wrong: diagnose each below
            except UnicodeDecodeError:
                pass  # invalid UTF-8 inside some event: diagnose each below
            except msgspec.DecodeError as exc:
                if _LONE_SURROGATE.search(body) is None:
                    raise MalformedRequestError(f"request body is not valid JSON: {exc}") from exc
                # else: reject the events holding lone surrogates alone, below
            else:
                self._check_count(len(batch.events))
                if len(body) <= self._limits.max_event_bytes or not self._any_too_large(body):
                    return self._group(batch.events, batch.sent_at)
        check_depth(body, self._limits.max_json_depth)
        raw = self._decode_raw_batch(body)
        self._check_count(len(raw.events))
        out = DecodedBatch(raw.sent_at)
        for i, r in enumerate(raw.events):
            self._diagnose(out, i, bytes(r), parsed=True)
        return out

    def _decode_raw_batch(self, body: bytes) -> _RawBatch:
        """The batch with its events undecoded; lone surrogates make only their event invalid."""
        try:
            return self._raw_batch.decode(body)
        except msgspec.ValidationError as exc:
            raise MalformedRequestError(
                f'request body is not a batch {{"sent_at"?, "events": [...]}}: {exc}'
            ) from exc
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            marked = mark_lone_surrogates(body)
            if marked != body:
                return self._decode_raw_batch(marked)
            raise MalformedRequestError(f"request body is not valid JSON: {exc}") from exc

    def _any_too_large(self, body: bytes) -> bool:
        limit = self._limits.max_event_bytes
        raws = self._raw_batch.decode(body).events
        return any(len(r) > limit for r in raws)

    # -- application/x-ndjson ---------------------------------------------------

    def _decode_lines(self, body: bytes) -> DecodedBatch:
        stripped = body.strip()
        lines = _LINE_BREAKS.split(stripped) if stripped else []
        self._check_count(len(lines))
        limit = self._limits.max_event_bytes
        small = len(stripped) <= limit or all(len(line) <= limit for line in lines)
        if self._lines is not None and small:
            # Joining lines with commas is only valid JSON when every line is a
            # complete value: a value split over lines leaves ",," "{," "[," or ":,".
            try:
                events = self._lines.decode(b"[" + b",".join(lines) + b"]")
            except (msgspec.DecodeError, UnicodeDecodeError):
                pass  # diagnose each line below
            else:
                return self._group(events, None)
        out = DecodedBatch(None)
        for i, line in enumerate(lines):
            self._diagnose(out, i, line, parsed=False)
        return out

    # -- shared -----------------------------------------------------------------

    def _check_count(self, n: int) -> None:
        if n > self._limits.max_events_per_batch:
            raise RequestTooLargeError(
                f"batch has {n} events, more than the limit of "
                f"{self._limits.max_events_per_batch}; split it into smaller batches"
            )

    def _group(self, events: list[msgspec.Struct], sent_at: dt.datetime | None) -> DecodedBatch:
        names = self._names
        kinds = set(map(type, events))
        if len(kinds) == 1:  # the usual batch: one type, no per-event loop in Python
            return DecodedBatch(sent_at, {names[kinds.pop()]: events})
        valid: dict[str, list[msgspec.Struct]] = {}
        for ev in events:
            name = names[type(ev)]
            group = valid.get(name)
            if group is None:
                valid[name] = [ev]
            else:
                group.append(ev)
        return DecodedBatch(sent_at, valid)

    def _diagnose(self, out: DecodedBatch, index: int, raw: bytes, *, parsed: bool) -> None:
        """Decode one event alone; append it to ``out.valid`` or ``out.rejections``."""
        limit = self._limits.max_event_bytes

        def reject(error: str, reason: RejectReason, probe: _Probe | None = None) -> None:
            event_type = probe.type if probe is not None and isinstance(probe.type, str) else None
            event_id = probe.id if probe is not None else None
            if not (isinstance(event_id, str) and 0 < len(event_id) <= MAX_ID_BYTES):
                event_id = None
            out.rejections.append(Rejection(index, event_id, error, reason, event_type, raw))

        if not parsed:
            if len(raw) <= limit:
                try:
                    check_depth(raw, self._limits.max_json_depth)
                except MalformedRequestError as exc:
                    reject(str(exc), "invalid")
                    return
            try:
                self._raw_list.decode(b"[" + raw + b"]")
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                reject(f"malformed JSON: {exc}", "invalid")
                return
        try:
            probe = self._probe.decode(raw)
        except msgspec.ValidationError as exc:
            reject(f"event must be a JSON object: {exc}", "invalid")
            return
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            reject(f"malformed JSON: {exc}", "invalid")
            return
        if len(raw) > limit:
            reject(f"event is {len(raw)} bytes, more than the limit of {limit}", "too_large", probe)
            return
        if probe.type is None:
            reject("event has no `type`", "invalid", probe)
            return
        decoder = self._one.get(probe.type) if isinstance(probe.type, str) else None
        if decoder is None:
            reject(f"unknown event type {probe.type!r}", "unknown_type", probe)
            return
        try:
            event = decoder.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            reject(str(exc), "invalid", probe)
            return
        out.valid.setdefault(probe.type, []).append(event)
