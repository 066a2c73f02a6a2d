"""Arrow types of the Avro tree, and the columnar fix-ups after ``pyarrow.json``.

Two Arrow types exist per Avro type: the *target* type (the bucket column) and
the *read* type that ``pyarrow.json`` can parse the stored form into. They
differ only where the JSON reader cannot produce the target directly:

=====================  ==============================  =====================
Avro                   read type                       target type
=====================  ==============================  =====================
date                   string                          date32
timestamp-millis       timestamp[us, UTC]              timestamp[ms, UTC]
bytes, fixed           list<uint8>                     binary
map<V>                 list<struct<key, value: V>>     map<string, V>
=====================  ==============================  =====================

:func:`convert` turns a read-typed array into the target type with whole-array
operations only (casts and buffer re-assembly), recursively through structs,
lists and maps.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from courier.schema.avro import Array, AvroType, Enum, Fixed, Map, Nullable, Primitive, Record

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
    "date": pa.date32(),
    "uuid": pa.string(),
}
_LOGICAL_READ = {**_LOGICAL_TARGET, "timestamp-millis": UTC_US, "date": pa.string()}


def arrow_type(t: AvroType, *, read: bool = False) -> pa.DataType:
    """The bucket column type of ``t`` (or, with ``read``, the JSON read type)."""
    if isinstance(t, Nullable):
        return arrow_type(t.inner, read=read)
    if isinstance(t, Primitive):
        if t.logical is not None:
            return (_LOGICAL_READ if read else _LOGICAL_TARGET)[t.logical]
        if read and t.kind == "bytes":
            return pa.list_(pa.uint8())
        return _PRIMITIVE_TARGET[t.kind]
    if isinstance(t, Fixed):
        return pa.list_(pa.uint8()) if read else pa.binary()
    if isinstance(t, Enum):
        return pa.string()
    if isinstance(t, Array):
        return pa.list_(arrow_type(t.items, read=read))
    if isinstance(t, Map):
        value = arrow_type(t.values, read=read)
        if read:
            return pa.list_(pa.struct([pa.field("key", pa.string()), pa.field("value", value)]))
        return pa.map_(pa.string(), value)
    assert isinstance(t, Record)
    return pa.struct(record_fields(t, read=read))


def record_fields(record: Record, *, read: bool = False) -> list[pa.Field]:
    return [pa.field(f.name, arrow_type(f.type, read=read)) for f in record.fields]


def convert(arr: pa.Array, target: pa.DataType) -> pa.Array:
    """Convert an array of a read type into ``target`` without per-row Python work."""
    if arr.type == target:
        return arr
    if pa.types.is_struct(target):
        if target.num_fields == 0:
            return arr
        children = [convert(arr.field(i), target.field(i).type) for i in range(target.num_fields)]
        return pa.StructArray.from_arrays(children, fields=list(target), mask=_mask(arr))
    if pa.types.is_map(target):
        offsets, entries = _list_parts(arr)
        value = convert(entries.field(1), target.item_type)
        return pa.MapArray.from_arrays(
            offsets, entries.field(0), value, type=target, mask=_mask(arr)
        )
    if pa.types.is_list(target):
        offsets, values = _list_parts(arr)
        return pa.ListArray.from_arrays(
            offsets, convert(values, target.value_type), type=target, mask=_mask(arr)
        )
    if pa.types.is_binary(target):
        return _bytes_from_lists(arr)
    if pa.types.is_timestamp(target):
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
