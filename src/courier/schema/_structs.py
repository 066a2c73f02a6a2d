"""Build msgspec types from the Avro tree (validation) and the stored-form transforms.

Validation is msgspec's: every constraint is expressed in the type (bounds,
``tz=True``, ``Literal`` symbols, ``forbid_unknown_fields``) so that one C pass
validates a whole batch and error messages carry the JSON path of the field.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, Literal, Optional

import msgspec

from courier.model import MAX_ID_BYTES
from courier.schema.avro import (
    Array,
    AvroType,
    Enum,
    Field,
    Fixed,
    Map,
    Nullable,
    Primitive,
    Record,
)

_INT32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
_INT64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_TIMESTAMP = Annotated[dt.datetime, msgspec.Meta(tz=True)]
# Avro's JSON encoding of bytes: one character per byte, code points 0-255.
_LATIN1 = "^[\x00-\xff]*$"
_BYTES = Annotated[str, msgspec.Meta(pattern=_LATIN1)]
EVENT_ID = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_BYTES)]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_IMMUTABLE = (type(None), bool, int, float, str, dt.date, dt.datetime, uuid.UUID)

Transform = Callable[[Any], Any]


def event_struct(name: str, payload: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """The input envelope of one event type: a tagged Struct ``{"type": name, ...}``."""
    return msgspec.defstruct(
        name,
        [
            ("id", Optional[EVENT_ID], None),  # noqa: UP045 - a runtime type expression
            ("time", Optional[_TIMESTAMP], None),  # noqa: UP045
            ("data", payload),
        ],
        tag=name,
        tag_field="type",
        forbid_unknown_fields=True,
        kw_only=True,
        gc=False,
    )


def record_struct(record: Record) -> type[msgspec.Struct]:
    """A Struct for a record; nested records become nested Structs."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for f in record.fields:
        pytype = py_type(f.type)
        if f.has_default:
            fields.append((f.name, pytype, _default(f, pytype)))
        else:
            fields.append((f.name, pytype))
    return msgspec.defstruct(
        record.name, fields, forbid_unknown_fields=True, kw_only=True, gc=False
    )


def py_type(t: AvroType) -> Any:
    """The msgspec type that validates the JSON form of ``t``."""
    if isinstance(t, Nullable):
        return Optional[py_type(t.inner)]  # noqa: UP045
    if isinstance(t, Primitive):
        if t.logical in ("timestamp-millis", "timestamp-micros"):
            return _TIMESTAMP
        if t.logical == "date":
            return dt.date
        if t.logical == "uuid":
            return uuid.UUID
        return {
            "null": None,
            "boolean": bool,
            "int": _INT32,
            "long": _INT64,
            "float": float,
            "double": float,
            "bytes": _BYTES,
            "string": str,
        }[t.kind]
    if isinstance(t, Fixed):
        return Annotated[str, msgspec.Meta(min_length=t.size, max_length=t.size, pattern=_LATIN1)]
    if isinstance(t, Enum):
        literal: Any = Literal
        return literal[t.symbols]
    if isinstance(t, Array):
        return list[py_type(t.items)]  # type: ignore[misc]
    if isinstance(t, Map):
        return dict[str, py_type(t.values)]  # type: ignore[misc]
    return record_struct(t)


def _default(f: Field, pytype: Any) -> Any:
    wire = _avro_default_to_python(f.type, f.default)
    value = msgspec.convert(wire, pytype)
    if isinstance(value, _IMMUTABLE) or value in ([], {}):
        return value
    return msgspec.field(default_factory=partial(msgspec.convert, wire, pytype))


def _avro_default_to_python(t: AvroType, v: Any) -> Any:
    """Avro JSON defaults carry logical types as numbers; msgspec wants objects."""
    if v is None:
        return None
    if isinstance(t, Nullable):
        return _avro_default_to_python(t.inner, v)
    if isinstance(t, Primitive) and isinstance(v, int):
        if t.logical == "timestamp-millis":
            return _EPOCH + dt.timedelta(milliseconds=v)
        if t.logical == "timestamp-micros":
            return _EPOCH + dt.timedelta(microseconds=v)
        if t.logical == "date":
            return dt.date(1970, 1, 1) + dt.timedelta(days=v)
    if isinstance(t, Array):
        return [_avro_default_to_python(t.items, x) for x in v]
    if isinstance(t, Map):
        return {k: _avro_default_to_python(t.values, x) for k, x in v.items()}
    if isinstance(t, Record):
        return {f.name: _avro_default_to_python(f.type, v[f.name]) for f in t.fields if f.name in v}
    return v


def stored_transform(t: AvroType) -> Transform | None:
    """A function rewriting ``msgspec.to_builtins`` output into the stored form, or
    None when the stored form is the plain JSON form (no maps or bytes inside).

    Maps become ``[{"key", "value"}, ...]`` and bytes become lists of byte values,
    because pyarrow's JSON reader can read neither arbitrary-key objects as maps
    nor Avro's latin-1 text as binary.
    """
    if isinstance(t, Nullable):
        inner = stored_transform(t.inner)
        return None if inner is None else partial(_nullable, inner)
    if isinstance(t, Primitive):
        return _bytes if t.kind == "bytes" else None
    if isinstance(t, Fixed):
        return _bytes
    if isinstance(t, Array):
        item = stored_transform(t.items)
        return None if item is None else partial(_array, item)
    if isinstance(t, Map):
        return partial(_map, stored_transform(t.values))
    if isinstance(t, Record):
        steps = [(f.name, g) for f in t.fields if (g := stored_transform(f.type)) is not None]
        return partial(_record, steps) if steps else None
    return None


def _nullable(inner: Transform, v: Any) -> Any:
    return None if v is None else inner(v)


def _bytes(v: str) -> list[int]:
    return list(v.encode("latin-1"))


def _array(item: Transform, v: list[Any]) -> list[Any]:
    return [item(x) for x in v]


def _map(value: Transform | None, v: dict[str, Any]) -> list[dict[str, Any]]:
    if value is None:
        return [{"key": k, "value": x} for k, x in v.items()]
    return [{"key": k, "value": value(x)} for k, x in v.items()]


def _record(steps: list[tuple[str, Transform]], v: dict[str, Any]) -> dict[str, Any]:
    for name, step in steps:
        v[name] = step(v[name])
    return v
