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

Translation is a pre-pass over the body: :meth:`Translator.translate` turns the calls
into a Courier batch and hands it to the gateway's own :class:`Validator`, so
validation, limits and the stored form are Courier's. Calls that cannot be
translated (no user, unknown call type, unplanned or forbidden type) become
rejections next to the validator's, with their index in the Segment batch and
their original text, so ``_invalid`` keeps what the client sent.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from courier.errors import MalformedRequestError, RequestTooLargeError
from courier.gateway.body import BodyFormat
from courier.gateway.ingest import (
    SENT_AT,
    DecodedBatch,
    Rejection,
    RejectReason,
    Validator,
    mark_lone_surrogates,
)
from courier.model import MAX_ID_BYTES
from courier.service.auth import Principal
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
class _Common(msgspec.Struct):
    user_id: str | None
    anonymous_id: str | None
    context: str | None


class _Identify(_Common):
    traits: str | None


class _Track(_Common):
    event: str
    properties: str | None


class _Planned(_Common):
    properties: msgspec.Raw


class _Page(_Common):
    name: str | None
    category: str | None
    properties: str | None


class _Group(_Common):
    group_id: str
    traits: str | None


class _Alias(_Common):
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


class _CallBatch(msgspec.Struct):
    """:class:`_Batch` with its calls decoded: the fast path when every call is an object."""

    batch: list[_Call]
    sentAt: msgspec.Raw = _ABSENT
    writeKey: str | None = None


@dataclass(slots=True)
class Envelope:
    """A parsed request: its calls, the batch's ``sentAt`` and write key.

    ``calls`` holds every call decoded in one pass when all are JSON objects (the
    common case), else None; the calls' text is split out only when needed
    (:meth:`texts`: a call to diagnose or to keep in ``_invalid``, or a body
    large enough to hold a call over the event limit).
    """

    body: bytes
    single: bool
    count: int
    sent_at: msgspec.Raw
    write_key: str | None
    calls: list[_Call] | None
    _texts: list[msgspec.Raw] | None = None

    def texts(self) -> list[msgspec.Raw]:
        """The text of each call, as the client sent it."""
        if self._texts is None:
            if self.single:
                self._texts = [msgspec.Raw(self.body)]
            else:
                self._texts = _batch_decoder.decode(self.body).batch
        return self._texts


_batch_decoder = msgspec.json.Decoder(_Batch)
_call_batch_decoder = msgspec.json.Decoder(_CallBatch)
_single_decoder = msgspec.json.Decoder(_Single)
_call_decoder = msgspec.json.Decoder(_Call)
_encode = msgspec.json.Encoder().encode


def parse(body: bytes, call: Call | None, limits: GatewaySettings) -> Envelope:
    """Split a request body into its calls: a batch when ``call`` is None, else one call.

    Raises MalformedRequestError (400) when the body is not a JSON object of that
    shape and RequestTooLargeError (413) over ``max_events_per_batch``. A lone
    surrogate escape (which JavaScript's JSON.stringify writes for a broken emoji)
    makes only the calls holding one invalid, as on ``/v1/events``.
    """
    try:
        try:
            envelope = _split(body, call)
        except msgspec.DecodeError:
            marked = mark_lone_surrogates(body)
            if marked == body:
                raise
            envelope = _split(marked, call)
    except msgspec.ValidationError as exc:
        shape = '{"batch": [...], "sentAt"?, "writeKey"?}' if call is None else "a JSON object"
        raise MalformedRequestError(f"request body is not {shape}: {exc}") from exc
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedRequestError(f"request body is not valid JSON: {exc}") from exc
    if envelope.count > limits.max_events_per_batch:
        raise RequestTooLargeError(
            f"batch has {envelope.count} calls, more than the limit of "
            f"{limits.max_events_per_batch}; send smaller batches"
        )
    return envelope


def _split(body: bytes, call: Call | None) -> Envelope:
    if call is not None:
        single = _single_decoder.decode(body)
        envelope = Envelope(body, True, 1, single.sentAt, single.writeKey, None)
        with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
            envelope.calls = [_call_decoder.decode(body)]
        return envelope
    try:  # fast path: every call decoded in this one pass
        typed = _call_batch_decoder.decode(body)
        return Envelope(body, False, len(typed.batch), typed.sentAt, typed.writeKey, typed.batch)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
        batch = _batch_decoder.decode(body)  # some call is wrong: diagnose each
        return Envelope(
            body, False, len(batch.batch), batch.sentAt, batch.writeKey, None, batch.batch
        )


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
        self._allowed = principal.types
        self._max_event_bytes = limits.max_event_bytes

    def translate(
        self, envelope: Envelope, call: Call | None, validator: Validator
    ) -> DecodedBatch:
        """The batch of ``envelope``'s calls (``call``: the type of a single-call route)."""
        events: list[_Event] = []
        origin: list[int] = []  # index in the Segment batch of each Courier event
        refused: list[Rejection] = []
        sent_at_error = _check_sent_at(envelope.sent_at)
        calls = envelope.calls
        limit = self._max_event_bytes
        texts = envelope.texts() if calls is None or len(envelope.body) > limit else None
        for index in range(envelope.count):
            try:
                if sent_at_error is not None:
                    raise _Refused(sent_at_error)
                if texts is not None and len(texts[index]) > limit:
                    raise _Refused(
                        f"call is {len(texts[index])} bytes, more than the limit of {limit}",
                        "too_large",
                    )
                c = calls[index] if calls is not None else _decode_call(texts[index])  # type: ignore[index]
                events.append(self._event(c, call))
                origin.append(index)
            except _Refused as exc:
                text = envelope.texts()[index]
                refused.append(
                    Rejection(
                        index, _message_id(text), str(exc), exc.reason, exc.event_type, bytes(text)
                    )
                )
        body = _encode(
            _CourierBatch(events, envelope.sent_at if sent_at_error is None else _ABSENT)
        )
        batch = validator.decode(body, BodyFormat.JSON)
        for r in batch.rejections:
            r.index = origin[r.index]
            r.raw = bytes(envelope.texts()[r.index])
            r.error = _PATH.sub(lambda m: _RENAMED[m.group(0)], r.error)
        if refused:
            batch.rejections = sorted([*batch.rejections, *refused], key=lambda r: r.index)
        return batch

    def _event(self, c: _Call, route_call: Call | None) -> _Event:
        # The hot path of the Segment routes: plain attribute reads, positional Structs.
        kind = route_call or c.type
        user_id = c.userId if type(c.userId) is str and c.userId else _id(c.userId)
        anonymous_id = _id(c.anonymousId) if c.anonymousId is not None else None
        context = _json_text(c.context, "context")
        data: _Common
        if kind == "alias":
            previous_id = _id(c.previousId)
            if user_id is None or previous_id is None:
                raise _Refused("an `alias` call needs `userId` and `previousId`")
            data = _Alias(user_id, anonymous_id, context, previous_id)
            return self._typed(CALL_TYPES["alias"], data, c)
        if kind not in CALL_TYPES:
            raise _Refused(
                f"unknown Segment call type {kind!r}; expected one of {', '.join(CALL_TYPES)}"
            )
        if user_id is None and anonymous_id is None:
            raise _Refused(f"a `{kind}` call needs `userId` or `anonymousId`")
        if kind == "track":
            event = c.event
            if type(event) is not str or not event:
                raise _Refused("a `track` call needs `event`, the name of the action")
            planned = self._plan.get(event)
            if planned is not None:
                properties = c.properties
                if not len(properties) or properties == b"null":
                    properties = _EMPTY_OBJECT
                data = _Planned(user_id, anonymous_id, context, properties)
                return self._typed(planned, data, c)
            if not self._store_unplanned:
                raise _Refused(
                    f"track event {event[:200]!r} is not in the tracking plan "
                    "([segment] tracking_plan) and unplanned events are rejected for API key "
                    f"{self._principal.name!r}",
                    "unknown_type",
                )
            properties_text = _json_text(c.properties, "properties")
            data = _Track(user_id, anonymous_id, context, event, properties_text)
        elif kind == "identify":
            data = _Identify(user_id, anonymous_id, context, _json_text(c.traits, "traits"))
        elif kind == "group":
            group_id = _id(c.groupId)
            if group_id is None:
                raise _Refused("a `group` call needs `groupId`")
            traits = _json_text(c.traits, "traits")
            data = _Group(user_id, anonymous_id, context, group_id, traits)
        else:  # page, screen
            properties_text = _json_text(c.properties, "properties")
            data = _Page(user_id, anonymous_id, context, c.name, c.category, properties_text)
        return self._typed(CALL_TYPES[kind], data, c)  # type: ignore[index]

    def _typed(self, event_type: str, data: _Common, c: _Call) -> _Event:
        if self._allowed is not None and event_type not in self._allowed:
            raise _Refused(
                f"API key {self._principal.name!r} may not send event type {event_type!r}",
                "forbidden",
                event_type,
            )
        return _Event(event_type, data, c.messageId, c.timestamp)


def _decode_call(text: msgspec.Raw) -> _Call:
    try:
        return _call_decoder.decode(text)
    except msgspec.ValidationError as exc:
        raise _Refused(f"not a Segment call: {exc}") from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _Refused(f"malformed JSON: {exc}") from exc


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
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Refused(f"`{field}` is not valid UTF-8 (or holds a lone surrogate): {exc}") from exc


def _check_sent_at(raw: msgspec.Raw) -> str | None:
    """Why ``sentAt`` is unusable, or None; a bad one rejects its calls, not the request."""
    if not len(raw):
        return None
    try:
        msgspec.json.decode(bytes(raw), type=SENT_AT)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        return f"`sentAt` is not an RFC 3339 time with a time zone: {exc}"
    return None
