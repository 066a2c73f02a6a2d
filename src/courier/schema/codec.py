"""The compiled form of one event type version: validation, stored form, Arrow schema.

Stored form (the body of transport messages): NDJSON, one line per event,
each line ending in ``\\n``::

    {"id": "0193…", "time": "2026-11-26T10:14:59.001000Z" | null,
     "sent_at": "…Z" | null, "received_at": "…Z", "schema_version": 3,
     "data": {<payload in its JSON form>}}

The payload keeps the event's JSON form except that maps are written as
``[{"key": k, "value": v}, ...]`` and bytes/fixed as lists of byte values (see
:mod:`courier.schema._arrow` for why); decimals as text with exactly ``scale``
fractional digits; ``timestamp-millis``/``-micros`` and ``date`` given as numbers
as RFC 3339 text; ``time-*``, ``timestamp-nanos`` and ``local-timestamp-*`` as
integers; unions other than ``["null", T]`` as ``{"<branch>": value}``. Keys are
the field names of the version that accepted the event: the decoder reads a
renamed field under each of its names into one column. ``published_at`` is not in the line: it
is the transport's clock and is given to :meth:`CompiledType.decode_stored`. Nor is
``received_dc``, the DC that accepted the event: the delivery region derives it from the
message (:mod:`courier.transport.sources`), so a producer cannot write it.
Any other key in a line (such as ``type``) is ignored on decode.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import msgspec
import pyarrow as pa
import pyarrow.json as pj

from courier.errors import SchemaError, StoredBodyError
from courier.model import INVALID_TYPE
from courier.schema import _arrow, _structs, jsonread
from courier.schema.avro import parse_schema
from courier.schema.compat import assign_columns, renamed_columns

#: The built-in ``_invalid`` type keeps at most this much of a rejected event's text.
INVALID_RAW_MAX_BYTES = 64 * 1024
_TIERS = ("high", "normal", "low")
#: One thread per decode: callers decode in worker threads already, and pyarrow's
#: thread pool costs ~20 % more CPU per row on the writer's batches (issue 13).
_READ_OPTIONS = pj.ReadOptions(use_threads=False)
_ENVELOPE = [
    pa.field("id", pa.string()),
    pa.field("time", _arrow.UTC_US),
    pa.field("sent_at", _arrow.UTC_US),
    pa.field("received_at", _arrow.UTC_US),
]


@dataclass(frozen=True)
class TypeSettings:
    """Operational settings of an event type (not versioned with the schema)."""

    owner: str = "unknown"
    tier: Literal["high", "normal", "low"] = "normal"
    finance: bool = False
    #: None means the closer's ``default_grace_secs``.
    grace_secs: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.owner, str) or not self.owner:
            raise SchemaError(f"owner must be a non-empty string, got {self.owner!r}")
        if self.tier not in _TIERS:
            raise SchemaError(f"tier must be one of {', '.join(_TIERS)}, got {self.tier!r}")
        if not isinstance(self.finance, bool):
            raise SchemaError(f"finance must be true or false, got {self.finance!r}")
        if self.grace_secs is not None and (
            not isinstance(self.grace_secs, int)
            or isinstance(self.grace_secs, bool)
            or self.grace_secs < 0
        ):
            raise SchemaError(f"grace_secs must be a non-negative integer, got {self.grace_secs!r}")


class _StoredLine(msgspec.Struct, gc=False):
    id: str
    time: dt.datetime | None
    #: ``sent_at`` and ``received_at`` are the same for every line of a call: encoded
    #: once (msgspec.Raw), not once per event (issue 13). The bytes are the same.
    sent_at: msgspec.Raw
    received_at: msgspec.Raw
    schema_version: int
    data: Any


class CompiledType:
    """One version of one event type, ready to validate, store and decode events."""

    def __init__(
        self,
        name: str,
        avro: dict[str, Any],
        version: int,
        settings: TypeSettings,
        builtin: bool,
        history: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.name = name
        self.version = version
        self.settings = settings
        self.avro = avro
        self.record = parse_schema(avro, builtin=builtin)
        if self.record.short_name != name:
            raise SchemaError(f"{name}: the schema's record name is {self.record.name!r}")
        if history:
            self.record = assign_columns(
                [*(parse_schema(h, builtin=True) for h in history), self.record]
            )
        #: Renamed fields: dotted field path -> dotted column path (see assign_columns).
        self.renamed_columns = renamed_columns(self.record)
        self.payload_struct = _structs.record_struct(self.record)
        self.event_struct = _structs.event_struct(name, self.payload_struct)
        payload_fields = _arrow.record_fields(self.record)
        self.arrow_schema = pa.schema(
            [
                *_ENVELOPE,
                pa.field("published_at", _arrow.UTC_US),
                pa.field("received_dc", pa.string()),
                pa.field("schema_version", pa.int32()),
                *payload_fields,
            ]
        )
        read_fields = [*_ENVELOPE, pa.field("schema_version", pa.int32())]
        if payload_fields:
            read_fields.append(
                pa.field("data", pa.struct(_arrow.record_fields(self.record, read=True)))
            )
        self._read_schema = pa.schema(read_fields)
        self._parse_options = pj.ParseOptions(
            explicit_schema=self._read_schema, unexpected_field_behavior="ignore"
        )
        self._bulk_structure = jsonread.structure_of(self._read_schema, self.record)
        self._payload_targets = [f.type for f in payload_fields]
        self._transform = _structs.stored_transform(self.record)
        self._struct_transform = _structs.stored_struct_transform(self.record)
        self._encoder = msgspec.json.Encoder()

    def __repr__(self) -> str:
        return f"CompiledType({self.name!r}, version={self.version})"

    def encode_stored(
        self,
        events: Sequence[msgspec.Struct],
        ids: Sequence[str],
        sent_at: dt.datetime | None,
        received_at: dt.datetime,
    ) -> bytes:
        """NDJSON of the stored form, one line per event (each ending in ``\\n``).

        ``ids`` gives the final id of each event (the gateway fills missing ones).
        """
        if len(events) != len(ids):
            raise ValueError(f"{len(events)} events but {len(ids)} ids")
        v = self.version
        transform = self._transform
        sent = msgspec.Raw(self._encoder.encode(sent_at))
        received = msgspec.Raw(self._encoder.encode(received_at))
        if transform is None:
            lines = [
                _StoredLine(i, e.time, sent, received, v, e.data)  # type: ignore[attr-defined]
                for e, i in zip(events, ids, strict=True)
            ]
        elif (on_struct := self._struct_transform) is not None:
            lines = [
                _StoredLine(i, e.time, sent, received, v, on_struct(e.data))  # type: ignore[attr-defined]
                for e, i in zip(events, ids, strict=True)
            ]
        else:
            to_builtins = msgspec.to_builtins
            lines = [
                _StoredLine(i, e.time, sent, received, v, transform(to_builtins(e.data)))  # type: ignore[attr-defined]
                for e, i in zip(events, ids, strict=True)
            ]
        return self._encoder.encode_lines(lines)

    def decode_stored(
        self,
        body: bytes | Sequence[bytes],
        published_at: pa.Array,
        received_dc: pa.Array | None = None,
        *,
        bulk: jsonread.BulkJsonReader | None = None,
    ) -> pa.Table:
        """Bulk-decode stored NDJSON into a table with exactly :attr:`arrow_schema`, in
        line order: one body, or the bodies of several messages (each ending in
        ``\\n``), read as one. ``published_at`` holds one ``timestamp[us, UTC]`` value
        per line, ``received_dc`` one string (or null) per line; None: all null.

        ``bulk`` may read them instead of ``pyarrow.json``, without joining them; pass
        it only for bodies the gateway built from validated events
        (:mod:`courier.schema.jsonread`).
        """
        bodies = [body] if isinstance(body, bytes) else body
        if all(not b or b.isspace() for b in bodies):  # not strip(): copies a many-MB body
            if len(published_at):
                raise ValueError(f"{len(published_at)} published_at values for an empty body")
            return self.arrow_schema.empty_table()
        table = None
        if bulk is not None and self._bulk_structure is not None:
            table = bulk.read(bodies, len(published_at), self._bulk_structure, self._read_schema)
        if table is None:
            try:
                table = pj.read_json(
                    pa.BufferReader(b"".join(bodies)),  # one body: itself, not a copy
                    read_options=_READ_OPTIONS,
                    parse_options=self._parse_options,
                )
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise StoredBodyError(
                    f"stored events of {self.name} v{self.version} do not decode: {exc}"
                ) from exc
        if table.num_rows != len(published_at):
            raise ValueError(
                f"{table.num_rows} stored events but {len(published_at)} published_at values"
            )
        payload: list[pa.ChunkedArray] = []
        if self._payload_targets:
            converted = [
                _arrow.convert(c, self.record).flatten() for c in table.column("data").chunks
            ]
            for i, target in enumerate(self._payload_targets):
                payload.append(pa.chunked_array([c[i] for c in converted], type=target))
        columns = [
            table.column("id"),
            table.column("time"),
            table.column("sent_at"),
            table.column("received_at"),
            published_at.cast(_arrow.UTC_US),
            pa.nulls(len(published_at), pa.string()) if received_dc is None else received_dc,
            table.column("schema_version"),
            *payload,
        ]
        return pa.Table.from_arrays(columns, schema=self.arrow_schema)


def compile_type(
    name: str,
    avro: dict[str, Any],
    version: int,
    settings: TypeSettings,
    *,
    builtin: bool = False,
    history: Sequence[dict[str, Any]] = (),
) -> CompiledType:
    """Compile one version of an event type; raises :class:`SchemaError` if invalid.

    ``history`` holds the type's earlier schema versions, oldest first: a field
    renamed through ``aliases`` keeps the column name it had in them."""
    return CompiledType(name, avro, version, settings, builtin, history)


INVALID_AVRO: dict[str, Any] = {
    "type": "record",
    "name": INVALID_TYPE,
    "doc": "Events the gateway rejected, with the reason.",
    "fields": [
        {"name": "event_type", "type": ["null", "string"], "default": None},
        {"name": "error", "type": "string"},
        {"name": "index", "type": "int"},
        {"name": "raw", "type": "string"},
    ],
}


@cache
def invalid_type() -> CompiledType:
    """The built-in ``_invalid`` dataset (:data:`courier.model.INVALID_TYPE`)."""
    return compile_type(INVALID_TYPE, INVALID_AVRO, 1, TypeSettings(owner="courier"), builtin=True)
