"""Avro backward compatibility: can the new schema (reader) read old data (writer)?

Rules: added fields need defaults; removed fields are fine; the promotions
int→long/float/double, long→float/double, float→double and string↔bytes are
allowed; ``T`` may become ``["null", T]`` but not the reverse; an enum must
keep every old symbol unless it has a default; logical types may not change.
Records, arrays and maps are checked recursively. Named-type names are not
compared: they appear neither in the stored data nor in the bucket columns.
"""

from __future__ import annotations

from typing import Any

from courier.errors import SchemaError
from courier.schema.avro import (
    Array,
    AvroType,
    Enum,
    Fixed,
    Map,
    Nullable,
    Primitive,
    Record,
    describe,
    parse_schema,
)

_PROMOTIONS = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
}


def check_backward_compatible(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Problems that stop ``new`` from reading data written with ``old`` (empty = compatible).

    Raises :class:`SchemaError` if either schema is itself invalid.
    """
    try:
        writer = parse_schema(old, builtin=True)
    except SchemaError as exc:
        raise SchemaError(f"the current schema is invalid: {exc}") from exc
    reader = parse_schema(new, builtin=True)
    problems: list[str] = []
    _check(writer, reader, reader.name, problems)
    return problems


def _check(w: AvroType, r: AvroType, path: str, problems: list[str]) -> None:
    if isinstance(r, Nullable):
        if isinstance(w, Nullable):
            _check(w.inner, r.inner, path, problems)
        elif not (isinstance(w, Primitive) and w.kind == "null"):
            _check(w, r.inner, path, problems)
        return
    if isinstance(w, Nullable):
        problems.append(
            f"{path}: was nullable ({describe(w)}), now {describe(r)}; old nulls cannot be read"
        )
        return
    if isinstance(w, Record) and isinstance(r, Record):
        _check_record(w, r, path, problems)
    elif isinstance(w, Array) and isinstance(r, Array):
        _check(w.items, r.items, f"{path}[]", problems)
    elif isinstance(w, Map) and isinstance(r, Map):
        _check(w.values, r.values, f"{path}{{}}", problems)
    elif isinstance(w, Enum) and isinstance(r, Enum):
        missing = [s for s in w.symbols if s not in r.symbols]
        if missing and r.default is None:
            problems.append(
                f"{path}: enum symbol(s) {', '.join(missing)} removed and the enum has no default"
            )
    elif isinstance(w, Fixed) and isinstance(r, Fixed):
        if w.size != r.size:
            problems.append(f"{path}: fixed size changed from {w.size} to {r.size}")
    elif isinstance(w, Primitive) and isinstance(r, Primitive):
        _check_primitive(w, r, path, problems)
    else:
        problems.append(f"{path}: type changed from {describe(w)} to {describe(r)}")


def _check_record(w: Record, r: Record, path: str, problems: list[str]) -> None:
    old = {f.name: f for f in w.fields}
    for f in r.fields:
        if f.name in old:
            _check(old[f.name].type, f.type, f"{path}.{f.name}", problems)
        elif not f.has_default:
            problems.append(f"{path}.{f.name}: added field has no default")


def _check_primitive(w: Primitive, r: Primitive, path: str, problems: list[str]) -> None:
    if w == r:
        return
    if w.logical != r.logical:
        problems.append(
            f"{path}: logical type changed from {w.logical or 'none'} to {r.logical or 'none'}"
        )
    elif (w.kind, r.kind) not in _PROMOTIONS:
        problems.append(f"{path}: type changed from {w.kind} to {r.kind} (not a promotion)")
