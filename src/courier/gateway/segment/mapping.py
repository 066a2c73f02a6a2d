"""Segment's tracking API mapped onto Courier's event model.

A Segment call becomes one Courier event; the README's "Coming from Segment"
table states the same mapping for users:

* ``messageId`` -> ``id`` (a client's retry is deduplicated like any other),
  ``timestamp`` -> ``time``, ``sentAt`` -> ``sent_at`` (the batch's; a single
  call's own);
* ``userId`` -> ``user_id``, ``anonymousId`` -> ``anonymous_id``, ``context``
  -> ``context`` (JSON text): columns of every Segment type;
* each call type has a shipped type (:data:`CALL_TYPES`, schemas in
  ``schemas/``), except ``track``: its ``event`` name goes through the tracking
  plan (``[segment] tracking_plan``, e.g. "Song Played" -> ``SongPlayed``), whose
  schema validates ``properties`` as a record. An unplanned name follows the
  key's policy: stored in ``SegmentTrack`` with ``properties`` as JSON text, or
  rejected into ``_invalid``;
* ``integrations``, ``receivedAt``, ``originalTimestamp``, ``channel``,
  ``version`` and any other key are ignored, as Segment ignores unknown keys.

Translation is a pre-pass over the body: :func:`translate` turns the calls
into a Courier batch and hands it to the gateway's own :class:`Validator`, so
validation, limits and the stored form are Courier's. Calls that cannot be
translated (no user, unknown call type, unplanned or forbidden type) become
rejections next to the validator's, with their index in the Segment batch and
their original text, so ``_invalid`` keeps what the client sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from courier.auth import Principal
from courier.errors import MalformedRequestError, RequestTooLargeError
from courier.gateway.body import BodyFormat
from courier.gateway.ingest import SENT_AT, DecodedBatch, Rejection, RejectReason, Validator
from courier.model import MAX_ID_BYTES
from courier.settings import GatewaySettings, SegmentSettings

Call = Literal["identify", "track", "page", "screen", "group", "alias"]
#: The Courier event type of each Segment call type (``track``: unplanned events only).
CALL_TYPES: dict[Call, str] = {
    "identify": "SegmentIdentify",
    "track": "SegmentTrack",
    "page": "SegmentPage",
    "screen": "SegmentScreen",
    "group": "SegmentGroup",
    "alias": "SegmentAlias",
}
#: analytics.js (``@segment/analytics-next``) posts to ``/v1/<letter>``.
SHORT_PATHS: dict[str, Call] = {c[0]: c for c in CALL_TYPES}
#: The Segment name of each field Courier stores under another name: the
#: validator's error paths are rewritten with it, so errors name what the client sent.
_PATHS = (
    ("$.data.properties", "$.properties"),
    ("$.data.traits", "$.traits"),
    ("$.data.user_id", "$.userId"),
    ("$.data.anonymous_id", "$.anonymousId"),
    ("$.data.context", "$.context"),
    ("$.data.group_id", "$.groupId"),
    ("$.data.previous_id", "$.previousId"),
    ("$.data", "$"),
    ("$.time", "$.timestamp"),
    ("$.id", "$.messageId"),
)
_PATH = re.compile("|".join(re.escape(a) + r"(?![A-Za-z_])" for a, _ in _PATHS))
_RENAMED = dict(_PATHS)
_ABSENT = msgspec.Raw()
_EMPTY_OBJECT = msgspec.Raw(b"{}")


class _Batch(msgspec.Struct):
    """``POST /v1/batch`` (and analytics.js ``/v1/b``); unknown keys are ignored."""

    batch: list[msgspec.Raw]
    sentAt: msgspec.Raw = _ABSENT
    writeKey: str | None = None


class _Single(msgspec.Struct):
    """What a single call (``/v1/track`` ...) carries besides the call itself."""

    sentAt: msgspec.Raw = _ABSENT
    writeKey: str | None = None


class _Call(msgspec.Struct):
    """One Segment call; Segment ignores unknown keys, and so does this."""

    type: str | None = None
    messageId: Any = None
    timestamp: msgspec.Raw = _ABSENT
    userId: str | int | None = None
    anonymousId: str | int | None = None
    context: msgspec.Raw = _ABSENT
    event: Any = None
    properties: msgspec.Raw = _ABSENT
    traits: msgspec.Raw = _ABSENT
    name: str | None = None
    category: str | None = None
    groupId: str | int | None = None
    previousId: str | int | None = None


# The ``data`` of each Courier type; the common columns come first in every schema.
class _Common(msgspec.Struct, kw_only=True):
    user_id: str | None
    anonymous_id: str | None
    context: str | None


class _Identify(_Common, kw_only=True):
    traits: str | None


class _Track(_Common, kw_only=True):
    event: str
    properties: str | None


class _Planned(_Common, kw_only=True):
    properties: msgspec.Raw


class _Page(_Common, kw_only=True):
    name: str | None
    category: str | None
    properties: str | None


class _Group(_Common, kw_only=True):
    group_id: str
    traits: str | None


class _Alias(_Common, kw_only=True):
    previous_id: str


class _Event(msgspec.Struct, omit_defaults=True):
    """A Courier event in the wire form the validator reads."""

    type: str
    data: _Common
    id: Any = None
    time: msgspec.Raw = _ABSENT


class _CourierBatch(msgspec.Struct, omit_defaults=True):
    events: list[_Event]
    sent_at: msgspec.Raw = _ABSENT


class _Refused(Exception):
    """A call that cannot be translated; becomes a rejection (never leaves this module)."""

    def __init__(self, error: str, reason: RejectReason = "invalid", event_type: str | None = None):
        super().__init__(error)
        self.reason: RejectReason = reason
        self.event_type = event_type


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed request: its calls still as text, the batch's ``sentAt`` and write key."""

    calls: list[msgspec.Raw]
    sent_at: msgspec.Raw
    write_key: str | None


_batch_decoder = msgspec.json.Decoder(_Batch)
_single_decoder = msgspec.json.Decoder(_Single)
_call_decoder = msgspec.json.Decoder(_Call)
_encode = msgspec.json.Encoder().encode


def parse(body: bytes, call: Call | None, limits: GatewaySettings) -> Envelope:
    """Split a request body into its calls: a batch when ``call`` is None, else one call.

    Raises MalformedRequestError (400) when the body is not a JSON object of that
    shape and RequestTooLargeError (413) over ``max_events_per_batch``.
    """
    try:
        if call is None:
            batch = _batch_decoder.decode(body)
            calls, sent_at, write_key = batch.batch, batch.sentAt, batch.writeKey
        else:
            single = _single_decoder.decode(body)
            calls, sent_at, write_key = [msgspec.Raw(body)], single.sentAt, single.writeKey
    except msgspec.ValidationError as exc:
        shape = '{"batch": [...], "sentAt"?, "writeKey"?}' if call is None else "a JSON object"
        raise MalformedRequestError(f"request body is not {shape}: {exc}") from exc
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedRequestError(f"request body is not valid JSON: {exc}") from exc
    if len(calls) > limits.max_events_per_batch:
        raise RequestTooLargeError(
            f"batch has {len(calls)} calls, more than the limit of "
            f"{limits.max_events_per_batch}; send smaller batches"
        )
    return Envelope(calls, sent_at, write_key)


class Translator:
    """Segment calls -> a validated Courier batch, for one API key (see the module doc)."""

    def __init__(
        self, settings: SegmentSettings, limits: GatewaySettings, principal: Principal
    ) -> None:
        self._plan: Mapping[str, str] = settings.tracking_plan
        self._store_unplanned = (
            settings.unplanned_track_by_key.get(principal.name, settings.unplanned_track) == "store"
        )
        self._principal = principal
        self._max_event_bytes = limits.max_event_bytes

    def translate(
        self, envelope: Envelope, call: Call | None, validator: Validator
    ) -> DecodedBatch:
        """The batch of ``envelope``'s calls (``call``: the type of a single-call route)."""
        events: list[_Event] = []
        origin: list[int] = []  # index in the Segment batch of each Courier event
        refused: list[Rejection] = []
        sent_at_error = _check_sent_at(envelope.sent_at)
        for index, raw in enumerate(envelope.calls):
            try:
                if sent_at_error is not None:
                    raise _Refused(sent_at_error)
                if len(raw) > self._max_event_bytes:
                    raise _Refused(
                        f"call is {len(raw)} bytes, more than the limit of {self._max_event_bytes}",
                        "too_large",
                    )
                events.append(self._event(raw, call))
                origin.append(index)
            except _Refused as exc:
                refused.append(
                    Rejection(
                        index, _message_id(raw), str(exc), exc.reason, exc.event_type, bytes(raw)
                    )
                )
        body = _encode(
            _CourierBatch(events, envelope.sent_at if sent_at_error is None else _ABSENT)
        )
        batch = validator.decode(body, BodyFormat.JSON)
        for r in batch.rejections:
            r.index = origin[r.index]
            r.raw = bytes(envelope.calls[r.index])
            r.error = _PATH.sub(lambda m: _RENAMED[m.group(0)], r.error)
        if refused:
            batch.rejections = sorted([*batch.rejections, *refused], key=lambda r: r.index)
        return batch

    def _event(self, raw: msgspec.Raw, route_call: Call | None) -> _Event:
        try:
            c = _call_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise _Refused(f"not a Segment call: {exc}") from exc
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise _Refused(f"malformed JSON: {exc}") from exc
        kind = route_call or c.type
        user_id, anonymous_id = _id(c.userId), _id(c.anonymousId)
        common = {
            "user_id": user_id,
            "anonymous_id": anonymous_id,
            "context": _json_text(c.context, "context"),
        }
        data: _Common
        if kind == "alias":
            previous_id = _id(c.previousId)
            if user_id is None or previous_id is None:
                raise _Refused("an `alias` call needs `userId` and `previousId`")
            data = _Alias(**common, previous_id=previous_id)
            return self._typed(CALL_TYPES["alias"], data, c)
        if kind not in CALL_TYPES:
            raise _Refused(
                f"unknown Segment call type {kind!r}; expected one of {', '.join(CALL_TYPES)}"
            )
        if user_id is None and anonymous_id is None:
            raise _Refused(f"a `{kind}` call needs `userId` or `anonymousId`")
        if kind == "track":
            return self._track(c, common)
        if kind == "identify":
            data = _Identify(**common, traits=_json_text(c.traits, "traits"))
        elif kind == "group":
            group_id = _id(c.groupId)
            if group_id is None:
                raise _Refused("a `group` call needs `groupId`")
            data = _Group(**common, group_id=group_id, traits=_json_text(c.traits, "traits"))
        else:  # page, screen
            properties = _json_text(c.properties, "properties")
            data = _Page(**common, name=c.name, category=c.category, properties=properties)
        return self._typed(CALL_TYPES[kind], data, c)  # type: ignore[index]

    def _track(self, c: _Call, common: dict[str, Any]) -> _Event:
        if not isinstance(c.event, str) or not c.event:
            raise _Refused("a `track` call needs `event`, the name of the action")
        planned = self._plan.get(c.event)
        if planned is not None:
            properties = c.properties if len(c.properties) else _EMPTY_OBJECT
            if properties == b"null":
                properties = _EMPTY_OBJECT
            return self._typed(planned, _Planned(**common, properties=properties), c)
        if not self._store_unplanned:
            raise _Refused(
                f"track event {c.event[:200]!r} is not in the tracking plan "
                "([segment] tracking_plan) and unplanned events are rejected for API key "
                f"{self._principal.name!r}",
                "unknown_type",
            )
        data = _Track(**common, event=c.event, properties=_json_text(c.properties, "properties"))
        return self._typed(CALL_TYPES["track"], data, c)

    def _typed(self, event_type: str, data: _Common, c: _Call) -> _Event:
        if not self._principal.may_send(event_type):
            raise _Refused(
                f"API key {self._principal.name!r} may not send event type {event_type!r}",
                "forbidden",
                event_type,
            )
        return _Event(event_type, data, c.messageId, c.timestamp)


class _IdProbe(msgspec.Struct):
    messageId: Any = None


_id_probe = msgspec.json.Decoder(_IdProbe)


def _message_id(raw: msgspec.Raw) -> str | None:
    """The ``messageId`` of a refused call, when it has a usable one (rare path)."""
    try:
        value = _id_probe.decode(raw).messageId
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ID_BYTES else None


def _id(value: str | int | None) -> str | None:
    """Segment accepts numbers as ids; Courier stores them as text. Empty means absent."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    return value if isinstance(value, str) else str(value)


def _json_text(raw: msgspec.Raw, field: str) -> str | None:
    """An object field kept as JSON text (None when absent or null)."""
    if not len(raw) or raw == b"null":
        return None
    text = bytes(raw)
    if not text.startswith(b"{"):
        raise _Refused(f"`{field}` must be an object")
    return text.decode("utf-8")


def _check_sent_at(raw: msgspec.Raw) -> str | None:
    """Why ``sentAt`` is unusable, or None; a bad one rejects its calls, not the request."""
    if not len(raw):
        return None
    try:
        msgspec.json.decode(bytes(raw), type=SENT_AT)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return f"`sentAt` is not an RFC 3339 time with a time zone: {exc}"
    return None
