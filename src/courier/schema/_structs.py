"""Build msgspec types from the Avro tree (validation) and the stored-form transforms.

Validation is msgspec's: every constraint is expressed in the type (bounds,
``tz=True``, ``Literal`` symbols, ``forbid_unknown_fields``) so that one C pass
validates a whole batch and error messages carry the JSON path of the field.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import keyword
import re
import uuid
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, Literal, Optional

import msgspec

from courier.model import MAX_ID_BYTES
from courier.schema import _decimal
from courier.schema.avro import (
    Array,
    AvroType,
    Decimal,
    Enum,
    Field,
    Fixed,
    Map,
    Nullable,
    Primitive,
    Record,
    Union,
    branch_key,
)

_INT32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
_INT64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_TIMESTAMP = Annotated[dt.datetime, msgspec.Meta(tz=True)]
# Avro's JSON encoding of bytes: one character per byte, code points 0-255.
_LATIN1 = "^[\x00-\xff]*$"
_BYTES = Annotated[str, msgspec.Meta(pattern=_LATIN1)]
EVENT_ID = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_BYTES)]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_DATE = dt.date(1970, 1, 1)
_IMMUTABLE = (
    type(None), bool, int, float, str, dt.date, dt.datetime, dt.time, uuid.UUID, decimal.Decimal
)  # fmt: skip

Transform = Callable[[Any], Any]


#: The Structs made for unnamed Avro shapes (union values, wrapped nullables), by kind
#: and shape: one class per shape, named after it (see :func:`_anonymous`).
_ANONYMOUS: dict[tuple[str, str], Any] = {}


def _anonymous(kind: str, shape: AvroType, make: Callable[[str], Any]) -> Any:
    """The one Struct (or pair) of ``kind`` for ``shape``, made by ``make(name)`` once.

    JSON Schema generation (the OpenAPI document) keys Structs by class name, so two
    different shapes must not share a name, and one shape must be one class. The name
    is a digest of the shape (the same in every process); ``-`` keeps it apart from
    every Avro name.
    """
    key = (kind, repr(shape))
    made = _ANONYMOUS.get(key)
    if made is None:
        digest = hashlib.sha256(key[1].encode()).hexdigest()[:12]
        made = _ANONYMOUS[key] = make(f"{kind}-{digest}")
    return made


def event_struct(name: str, payload: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """The input envelope of one event type: a tagged Struct ``{"type": name, ...}``.

    Its class name ends in ``-event``, which no Avro name can, so that it differs
    from the payload's record (named like the type) and every nested record: JSON
    Schema generation (the OpenAPI document) needs distinct names.
    """
    return msgspec.defstruct(
        f"{name}-event",
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
    """A Struct for a record; nested records become nested Structs. Fields whose JSON
    forms need checking or normalising (decimals, the numeric forms of logical
    types) get it in ``__post_init__``, whose errors msgspec reports with the path."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    unwrap: list[tuple[str, type]] = []
    from_int: list[tuple[str, Transform]] = []
    steps: list[tuple[str, Transform]] = []
    for f in record.fields:
        if isinstance(f.type, Nullable) and _wrappable(f.type.inner):
            pytype, wrapper = _nullable_py(f.type)
            unwrap.append((f.name, wrapper))
        else:
            pytype = py_type(f.type)
        if f.has_default:
            fields.append((f.name, pytype, _default(f, pytype)))
        else:
            fields.append((f.name, pytype))
        t = f.type.inner if isinstance(f.type, Nullable) else f.type
        if isinstance(t, Primitive) and t.logical in _FROM_INT:
            from_int.append((f.name, _FROM_INT[t.logical]))
        elif (step := _normalizer(t)) is not None:
            steps.append((f.name, partial(_nullable, step)))
    post_init = _post_init(unwrap, from_int, steps) if unwrap or from_int or steps else None
    return msgspec.defstruct(
        record.short_name,
        fields,
        forbid_unknown_fields=True,
        kw_only=True,
        gc=False,
        namespace={"__post_init__": post_init} if post_init else None,
    )


def union_struct(union: Union) -> type[msgspec.Struct]:
    """Avro's JSON encoding of a union value, ``{"<branch>": value}``: a Struct with
    one optional field per branch, of which exactly one must be set."""
    made: type[msgspec.Struct] = _anonymous("Union", union, partial(_union_struct, union))
    return made


def _union_struct(union: Union, name: str) -> type[msgspec.Struct]:
    fields: list[tuple[str, Any, Any]] = []
    rename: dict[str, str] = {}
    for i, b in enumerate(union.branches):
        fields.append((f"b{i}", Optional[py_type(b.type)], None))  # noqa: UP045
        rename[f"b{i}"] = b.key
    keys = [(f"b{i}", b.key, _normalizer(b.type)) for i, b in enumerate(union.branches)]
    example = union.branches[0].key

    def __post_init__(self: Any) -> None:
        chosen = [(attr, step) for attr, _key, step in keys if getattr(self, attr) is not None]
        if len(chosen) != 1:
            raise ValueError(
                f"a union value names exactly one of its branches "
                f'({", ".join(k for _a, k, _s in keys)}), e.g. {{"{example}": ...}}; '
                f"got {len(chosen)}"
            )
        attr, step = chosen[0]
        if step is not None:
            setattr(self, attr, step(getattr(self, attr)))

    return msgspec.defstruct(
        name,
        fields,
        rename=rename,
        forbid_unknown_fields=True,
        omit_defaults=True,
        kw_only=True,
        gc=False,
        namespace={"__post_init__": __post_init__},
    )


def _post_init(
    unwrap: list[tuple[str, type]],
    from_int: list[tuple[str, Transform]],
    steps: list[tuple[str, Transform]],
) -> Callable[[Any], None]:
    """A ``__post_init__`` for one record: ``unwrap`` fields (``["null", T]``) may hold
    Avro's JSON encoding ``{"<T>": value}`` and become the plain value; ``from_int``
    converts a field only when it holds an int (Avro's JSON number form of a timestamp
    or date, the rare case); ``steps`` always run and name the field in their errors.

    It is generated as straight-line code (as dataclasses does): it runs once per
    record value on the gateway's hot path, where a loop of getattr/setattr costs
    about 8 times as much as the attribute accesses themselves.
    """
    env: dict[str, Any] = {}
    lines = ["def __post_init__(self):"]
    for i, (name, wrapper) in enumerate(unwrap):
        env[f"_W{i}"] = wrapper  # `type(v) is W`: isinstance on a Struct base costs 6x more
        lines.append(f"    v = {_get(name)}")
        lines.append(f"    if type(v) is _W{i}: {_set(name, 'v.value')}")
    for i, (name, convert) in enumerate(from_int):
        env[f"_c{i}"] = convert
        lines.append(f"    v = {_get(name)}")
        lines.append(f"    if type(v) is int: {_set(name, f'_c{i}(v)')}")
    for i, (name, step) in enumerate(steps):
        env[f"_s{i}"] = step
        lines.append("    try:")
        lines.append(f"        {_set(name, f'_s{i}({_get(name)})')}")
        lines.append("    except ValueError as exc:")
        lines.append(f"        raise ValueError({name + ': '!r} + str(exc)) from None")
    exec("\n".join(lines), env)  # field names are Avro identifiers, checked at parse
    post_init: Callable[[Any], None] = env["__post_init__"]
    return post_init


def _get(name: str) -> str:
    return f"self.{name}" if not keyword.iskeyword(name) else f"getattr(self, {name!r})"


def _set(name: str, value: str) -> str:
    return (
        f"self.{name} = {value}"
        if not keyword.iskeyword(name)
        else f"setattr(self, {name!r}, {value})"
    )


#: Class attribute marking the Structs that read Avro's JSON encoding of a
#: ``["null", T]`` value, ``{"<T>": value}`` (only ``value`` is kept). Not a common
#: base class: ``isinstance`` against a Struct base costs 6x a type-identity check.
_WRAPPED = "__courier_wrapped__"


def _nullable_py(t: Nullable) -> tuple[Any, type]:
    """The msgspec type of a ``["null", T]`` that also takes ``{"<T>": value}``, and the
    Struct of the wrapped form."""
    made: tuple[Any, type] = _anonymous("Wrapped", t, partial(_make_nullable_py, t))
    return made


def _make_nullable_py(t: Nullable, name: str) -> tuple[Any, type]:
    inner = py_type(t.inner)
    wrapper = msgspec.defstruct(
        name,
        [("value", inner)],
        rename={"value": branch_key(t.inner)},
        forbid_unknown_fields=True,
        gc=False,
        namespace={_WRAPPED: True},
    )
    return Optional[inner | wrapper], wrapper  # noqa: UP045


def _wrappable(t: AvroType) -> bool:
    """Whether ``{"<T>": value}`` can be told from a plain T value: not when a T is
    itself a JSON object (records and maps keep to the plain form)."""
    return not isinstance(t, Record | Map | Union)


def py_type(t: AvroType) -> Any:
    """The msgspec type that validates the JSON form of ``t``."""
    if isinstance(t, Nullable):
        if _wrappable(t.inner):
            return _nullable_py(t)[0]
        return Optional[py_type(t.inner)]  # noqa: UP045
    if isinstance(t, Primitive):
        if t.logical is not None:
            return _LOGICAL_PY[t.logical]
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
    if isinstance(t, Decimal):
        return decimal.Decimal
    if isinstance(t, Fixed):
        return Annotated[str, msgspec.Meta(min_length=t.size, max_length=t.size, pattern=_LATIN1)]
    if isinstance(t, Enum):
        literal: Any = Literal
        return literal[t.symbols]
    if isinstance(t, Array):
        return list[py_type(t.items)]  # type: ignore[misc]
    if isinstance(t, Map):
        return dict[str, py_type(t.values)]  # type: ignore[misc]
    if isinstance(t, Union):
        return union_struct(t)
    return record_struct(t)


def _normalizer(t: AvroType) -> Transform | None:
    """What turns a decoded value of ``t`` into its stored value, or None (as is).

    Records and unions normalise themselves (their own ``__post_init__``)."""
    if isinstance(t, Nullable):
        inner = _normalizer(t.inner)
        if _wrappable(t.inner):
            return partial(_unwrap, inner)
        return None if inner is None else partial(_nullable, inner)
    if isinstance(t, Primitive):
        return _LOGICAL_NORMALIZE.get(t.logical) if t.logical else None
    if isinstance(t, Decimal):
        return partial(_fit_decimal, t.precision, t.scale)
    if isinstance(t, Array):
        item = _normalizer(t.items)
        return None if item is None else partial(_array, item)
    if isinstance(t, Map):
        value = _normalizer(t.values)
        return None if value is None else partial(_map_values, value)
    return None


def _unwrap(inner: Transform | None, v: Any) -> Any:
    if getattr(type(v), _WRAPPED, False):  # inside arrays and maps only: not the hot path
        v = v.value
    return v if v is None or inner is None else inner(v)


def _fit_decimal(precision: int, scale: int, v: decimal.Decimal) -> decimal.Decimal:
    return _decimal.fit(v, precision, scale)


def _map_values(step: Transform, v: dict[str, Any]) -> dict[str, Any]:
    return {k: step(x) for k, x in v.items()}


def _int_or(convert: Transform, v: Any) -> Any:
    return v if type(v) is int else convert(v)


def _from_int(convert: Transform, v: Any) -> Any:
    return convert(v) if type(v) is int else v


def _time_to_units(per_sec: int, t: dt.time) -> int:
    secs = t.hour * 3600 + t.minute * 60 + t.second
    return secs * per_sec + t.microsecond * per_sec // 1_000_000


def _naive_to_units(per_sec: int, t: dt.datetime) -> int:
    return (t - _EPOCH_NAIVE) // dt.timedelta(microseconds=1) * per_sec // 1_000_000


def _text_to_nanos(local: bool, text: str) -> int:
    """RFC 3339 text (``local``: without offset) to nanoseconds since the epoch, exactly."""
    m = _NANOS_LOCAL.fullmatch(text) if local else _NANOS.fullmatch(text)
    if m is None:
        form = "YYYY-MM-DDTHH:MM:SS[.fffffffff]" + ("" if local else "Z or +HH:MM")
        raise ValueError(f"{text!r} is not a date-time of the form {form}")
    try:
        whole = dt.datetime.fromisoformat(m["base"] + (m["offset"] or ""))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date-time: {exc}") from None
    epoch = _EPOCH_NAIVE if local else _EPOCH
    nanos = (whole - epoch) // dt.timedelta(seconds=1) * 1_000_000_000
    nanos += int((m["frac"] or "").ljust(9, "0"))
    if not -(2**63) <= nanos < 2**63:
        raise ValueError(f"{text!r} is outside the nanosecond range (years 1677-2262)")
    return nanos


_NANOS_BASE = r"(?P<base>\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,9}))?"
_NANOS = re.compile(_NANOS_BASE + r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})")
_NANOS_LOCAL = re.compile(_NANOS_BASE + r"(?P<offset>)")
_EPOCH_NAIVE = dt.datetime(1970, 1, 1)
#: Epoch milliseconds/microseconds/days that Python's datetime (years 1-9999) holds.
_MS_RANGE = msgspec.Meta(ge=-62_135_596_800_000, le=253_402_300_799_999)
_US_RANGE = msgspec.Meta(ge=-62_135_596_800_000_000, le=253_402_300_799_999_999)
_DAY_RANGE = msgspec.Meta(ge=-719_162, le=2_932_896)
_NAIVE_TIMESTAMP = Annotated[dt.datetime, msgspec.Meta(tz=False)]
_NAIVE_TIME = Annotated[dt.time, msgspec.Meta(tz=False)]

#: The msgspec type of each logical type: Avro's JSON encoding (a number) or text.
_LOGICAL_PY: dict[str, Any] = {
    "timestamp-millis": Annotated[int, _MS_RANGE] | _TIMESTAMP,
    "timestamp-micros": Annotated[int, _US_RANGE] | _TIMESTAMP,
    "timestamp-nanos": _INT64 | str,
    "local-timestamp-millis": _INT64 | _NAIVE_TIMESTAMP,
    "local-timestamp-micros": _INT64 | _NAIVE_TIMESTAMP,
    "local-timestamp-nanos": _INT64 | str,
    "date": Annotated[int, _DAY_RANGE] | dt.date,
    "time-millis": Annotated[int, msgspec.Meta(ge=0, lt=86_400_000)] | _NAIVE_TIME,
    "time-micros": Annotated[int, msgspec.Meta(ge=0, lt=86_400_000_000)] | _NAIVE_TIME,
    "uuid": uuid.UUID,
}
#: Stored forms: timestamps (millis, micros) and dates stay text as before; the
#: other logical types are stored as their integer (what Arrow casts from).
_FROM_INT: dict[str, Transform] = {
    "timestamp-millis": lambda v: _EPOCH + dt.timedelta(milliseconds=v),
    "timestamp-micros": lambda v: _EPOCH + dt.timedelta(microseconds=v),
    "date": lambda v: _EPOCH_DATE + dt.timedelta(days=v),
}
_LOGICAL_NORMALIZE: dict[str, Transform] = {
    **{k: partial(_from_int, convert) for k, convert in _FROM_INT.items()},
    "timestamp-nanos": partial(_int_or, partial(_text_to_nanos, False)),
    "local-timestamp-nanos": partial(_int_or, partial(_text_to_nanos, True)),
    "local-timestamp-millis": partial(_int_or, partial(_naive_to_units, 1000)),
    "local-timestamp-micros": partial(_int_or, partial(_naive_to_units, 1_000_000)),
    "time-millis": partial(_int_or, partial(_time_to_units, 1000)),
    "time-micros": partial(_int_or, partial(_time_to_units, 1_000_000)),
}


def _default(f: Field, pytype: Any) -> Any:
    wire = _avro_default_to_python(f.type, f.default)
    value = msgspec.convert(wire, pytype)
    if isinstance(value, _IMMUTABLE) or value in ([], {}):
        return value
    return msgspec.field(default_factory=partial(msgspec.convert, wire, pytype))


def _avro_default_to_python(t: AvroType, v: Any) -> Any:
    """Avro JSON defaults carry logical types as numbers, decimals as bytes and union
    values unwrapped (in the first branch); msgspec wants the input form."""
    if v is None:
        return None
    if isinstance(t, Nullable):
        return _avro_default_to_python(t.inner, v)
    if isinstance(t, Union):
        first = next(b for b in t.branches if b.key == t.first)
        return {first.key: _avro_default_to_python(first.type, v)}
    if isinstance(t, Decimal):
        return _decimal.default_value(t, v)
    if isinstance(t, Primitive) and isinstance(v, int):
        if t.logical == "timestamp-millis":
            return _EPOCH + dt.timedelta(milliseconds=v)
        if t.logical == "timestamp-micros":
            return _EPOCH + dt.timedelta(microseconds=v)
        if t.logical == "date":
            return _EPOCH_DATE + dt.timedelta(days=v)
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
    if isinstance(t, Union):
        by_key = {b.key: g for b in t.branches if (g := stored_transform(b.type)) is not None}
        return partial(_union, by_key) if by_key else None
    return None


def stored_struct_transform(record: Record) -> Transform | None:
    """:func:`stored_transform` of a payload record applied to its *Struct*, when every
    field it rewrites is a map whose values need no rewriting (``Search.filters``):
    those fields become key/value lists in a copy of the Struct, and msgspec encodes
    the rest in C, instead of converting the whole payload to Python objects first
    (issue 13). The encoded bytes are the same. None when another shape needs the
    general path (or nothing needs rewriting)."""
    maps = []
    for f in record.fields:
        if stored_transform(f.type) is None:
            continue
        inner = f.type.inner if isinstance(f.type, Nullable) else f.type
        if not isinstance(inner, Map) or stored_transform(inner.values) is not None:
            return None
        maps.append(f.name)
    if not maps:
        return None
    return partial(_replace_maps, maps)


class _Entry(msgspec.Struct, gc=False):
    """One map entry in the stored form: encodes as ``{"key": k, "value": v}``."""

    key: str
    value: Any


def _replace_maps(names: list[str], v: msgspec.Struct) -> msgspec.Struct:
    pairs = {}
    for name in names:
        m = getattr(v, name)
        pairs[name] = None if m is None else [_Entry(k, x) for k, x in m.items()]
    return msgspec.structs.replace(v, **pairs)


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


def _union(by_key: dict[str, Transform], v: dict[str, Any]) -> dict[str, Any]:
    for key, x in v.items():
        step = by_key.get(key)
        if step is not None:
            v[key] = step(x)
    return v
