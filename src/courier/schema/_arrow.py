"""Arrow types of the Avro tree, and the columnar fix-ups after ``pyarrow.json``.

Two Arrow types exist per Avro type: the *target* type (the bucket column) and
the *read* type that ``pyarrow.json`` can parse the stored form into. They
differ only where the JSON reader cannot produce the target directly:

=========================  ===========================  ===========================
Avro                       read type                    target type
=========================  ===========================  ===========================
date                       string                       date32
time-millis                int32 (ms)                   time32[ms]
time-micros                int64 (us)                   time64[us]
timestamp-millis           timestamp[us, UTC]           timestamp[ms, UTC]
timestamp-nanos            int64 (ns)                   timestamp[ns, UTC]
local-timestamp-millis     int64 (ms)                   timestamp[ms] (no zone)
local-timestamp-micros     int64 (us)                   timestamp[us] (no zone)
local-timestamp-nanos      int64 (ns)                   timestamp[ns] (no zone)
decimal(p, s)              decimal128(p, s)             decimal128(p, s)
bytes, fixed               list<uint8>                  binary
map<V>                     list<struct<key, value: V>>  map<string, V>
union [A, B, ...]          struct<A, B, ...>            struct<A, B, ...>
record field renamed       one child per stored name    one child, the first name
=========================  ===========================  ===========================

A union other than ``["null", T]`` is a struct with one nullable child per
non-null branch, named as in Avro's JSON encoding (``"string"``, ``"long"``,
``"array"``, ``"com.acme.Item"``); exactly one child is set in each non-null row.

:func:`convert` turns a read-typed array into the target type with whole-array
operations only (casts, coalesces and buffer re-assembly), recursively.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from courier.schema.avro import (
    Array,
    AvroType,
    Decimal,
    Enum,
    Fixed,
    Map,
    Nullable,
    Primitive,
    Record,
    Union,
)

UTC_US = pa.timestamp("us", tz="UTC")
UTC_MS = pa.timestamp("ms", tz="UTC")

_PRIMITIVE_TARGET = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}
_LOGICAL_TARGET = {
    "timestamp-millis": UTC_MS,
    "timestamp-micros": UTC_US,
    "timestamp-nanos": pa.timestamp("ns", tz="UTC"),
    "local-timestamp-millis": pa.timestamp("ms"),
    "local-timestamp-micros": pa.timestamp("us"),
    "local-timestamp-nanos": pa.timestamp("ns"),
    "date": pa.date32(),
    "time-millis": pa.time32("ms"),
    "time-micros": pa.time64("us"),
    "uuid": pa.string(),
}
_LOGICAL_READ = {
    **_LOGICAL_TARGET,
    "timestamp-millis": UTC_US,
    "timestamp-nanos": pa.int64(),
    "local-timestamp-millis": pa.int64(),
    "local-timestamp-micros": pa.int64(),
    "local-timestamp-nanos": pa.int64(),
    "date": pa.string(),
    "time-millis": pa.int32(),
    "time-micros": pa.int64(),
}
_BYTES_READ = pa.list_(pa.uint8())


def arrow_type(t: AvroType, *, read: bool = False) -> pa.DataType:
    """The bucket column type of ``t`` (or, with ``read``, the JSON read type)."""
    if isinstance(t, Nullable):
        return arrow_type(t.inner, read=read)
    if isinstance(t, Primitive):
        if t.logical is not None:
            return (_LOGICAL_READ if read else _LOGICAL_TARGET)[t.logical]
        if read and t.kind == "bytes":
            return _BYTES_READ
        return _PRIMITIVE_TARGET[t.kind]
    if isinstance(t, Decimal):
        return pa.decimal128(t.precision, t.scale)
    if isinstance(t, Fixed):
        return _BYTES_READ if read else pa.binary()
    if isinstance(t, Enum):
        return pa.string()
    if isinstance(t, Array):
        return pa.list_(arrow_type(t.items, read=read))
    if isinstance(t, Map):
        value = arrow_type(t.values, read=read)
        if read:
            return pa.list_(pa.struct([pa.field("key", pa.string()), pa.field("value", value)]))
        return pa.map_(pa.string(), value)
    if isinstance(t, Union):
        return pa.struct([pa.field(b.key, arrow_type(b.type, read=read)) for b in t.branches])
    return pa.struct(record_fields(t, read=read))


def record_fields(record: Record, *, read: bool = False) -> list[pa.Field]:
    """Columns of a record's fields; the read form has one child per stored name."""
    if not read:
        return [pa.field(f.column, arrow_type(f.type)) for f in record.fields]
    return [
        pa.field(name, arrow_type(f.type, read=True))
        for f in record.fields
        for name in f.stored_names
    ]


def convert(arr: pa.Array, t: AvroType) -> pa.Array:
    """Convert an array of ``t``'s read type into its target type without per-row
    Python work."""
    if isinstance(t, Nullable):
        t = t.inner
    target = arrow_type(t)
    if arr.type == target:
        return arr
    if isinstance(t, Record):
        if not t.fields:
            return arr
        children = []
        for f in t.fields:
            parts = [convert(arr.field(name), f.type) for name in f.stored_names]
            children.append(parts[0] if len(parts) == 1 else pc.coalesce(*parts))
        return pa.StructArray.from_arrays(children, fields=list(target), mask=_mask(arr))
    if isinstance(t, Union):
        children = [convert(arr.field(b.key), b.type) for b in t.branches]
        return pa.StructArray.from_arrays(children, fields=list(target), mask=_mask(arr))
    if isinstance(t, Map):
        offsets, entries = _list_parts(arr)
        value = convert(entries.field(1), t.values)
        return pa.MapArray.from_arrays(
            offsets, entries.field(0), value, type=target, mask=_mask(arr)
        )
    if isinstance(t, Array):
        offsets, values = _list_parts(arr)
        return pa.ListArray.from_arrays(
            offsets, convert(values, t.items), type=target, mask=_mask(arr)
        )
    if pa.types.is_binary(target):
        return _bytes_from_lists(arr)
    if isinstance(t, Primitive) and t.logical == "timestamp-millis":
        # Floor (not truncate toward zero) so pre-1970 instants stay in their millisecond.
        return pc.floor_temporal(arr, unit="millisecond").cast(target)
    return pc.cast(arr, target)


def _mask(arr: pa.Array) -> pa.Array | None:
    return arr.is_null() if arr.null_count else None


def _list_parts(arr: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Offsets starting at 0 (unsliced, as ``from_arrays`` with a mask needs) and
    the values they index."""
    offsets = arr.offsets
    start = offsets[0].as_py()
    end = offsets[-1].as_py()
    if arr.offset or start:
        offsets = pc.subtract(offsets, pa.scalar(start, pa.int32()))
    return offsets, arr.values.slice(start, end - start)


def _bytes_from_lists(arr: pa.Array) -> pa.Array:
    """``list<uint8>`` -> ``binary`` by reusing the list offsets and the byte buffer."""
    values = arr.values
    offsets = pc.add(arr.offsets, pa.scalar(values.offset, pa.int32()))
    validity = pc.invert(arr.is_null()).buffers()[1] if arr.null_count else None
    return pa.Array.from_buffers(
        pa.binary(),
        len(arr),
        [validity, offsets.buffers()[1], values.buffers()[1]],
        null_count=arr.null_count,
    )
