"""Avro backward compatibility: can the new schema (reader) read old data (writer)?

Avro's resolution rules, as they apply to Courier's stored form (JSON lines
decoded by the *latest* schema) and to its columns:

- a reader field matches the writer field of the same name, or else one named
  by one of the reader field's ``aliases`` (a rename); an unmatched reader field
  needs a default; writer fields the reader lacks are dropped;
- promotions int→long/float/double, long→float/double, float→double;
- ``T`` may become ``["null", T]`` but not the reverse;
- an enum must keep every old symbol unless it has a default; a fixed keeps its size;
- a decimal keeps its base type and may only widen: no fewer fractional digits,
  no fewer integer digits;
- other logical types may not change (their stored forms differ);
- a union may gain branches but keep every old one, matched by its key
  (``"long"``, ``"com.acme.Item"``); a non-union may not become a union nor the
  reverse, because stored union values are ``{"<branch>": value}``.

Stricter than Avro (see the README's schema section): string↔bytes is not a
promotion here, unions match by key, and names of named types are not compared
(they appear neither in the stored data nor in the bucket columns).

:func:`assign_columns` applies the same field matching across every version of
a type, so that a renamed field keeps the column name it was created with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from courier.errors import SchemaError
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
    describe,
    inner_types,
    parse_schema,
)

_PROMOTIONS = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
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
    _check(writer, reader, reader.short_name, problems)
    return problems


def match_field(writer: Record, field: Field) -> Field | None:
    """The writer field that ``field`` (of the reader) reads: same name, else an alias."""
    by_name = {f.name: f for f in writer.fields}
    found = by_name.get(field.name)
    if found is None:
        found = next((by_name[a] for a in field.aliases if a in by_name), None)
    return found


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
    if isinstance(w, Union) or isinstance(r, Union):
        _check_union(w, r, path, problems)
    elif isinstance(w, Record) and isinstance(r, Record):
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
    elif isinstance(w, Decimal) and isinstance(r, Decimal):
        _check_decimal(w, r, path, problems)
    elif isinstance(w, Primitive) and isinstance(r, Primitive):
        _check_primitive(w, r, path, problems)
    else:
        problems.append(f"{path}: type changed from {describe(w)} to {describe(r)}")


def _check_union(w: AvroType, r: AvroType, path: str, problems: list[str]) -> None:
    if not (isinstance(w, Union) and isinstance(r, Union)):
        problems.append(
            f"{path}: type changed from {describe(w)} to {describe(r)}; a field cannot become "
            'a union or stop being one (stored union values are {"<branch>": value})'
        )
        return
    readers = {b.key: b.type for b in r.branches}
    for b in w.branches:
        if b.key in readers:
            _check(b.type, readers[b.key], f"{path}<{b.key}>", problems)
        else:
            problems.append(f"{path}: union branch {b.key!r} removed; old values cannot be read")


def _check_record(w: Record, r: Record, path: str, problems: list[str]) -> None:
    for f in r.fields:
        old = match_field(w, f)
        if old is not None:
            _check(old.type, f.type, f"{path}.{f.name}", problems)
        elif not f.has_default:
            problems.append(f"{path}.{f.name}: added field has no default")


def _check_decimal(w: Decimal, r: Decimal, path: str, problems: list[str]) -> None:
    if (w.fixed_size is None) != (r.fixed_size is None) or w.fixed_size != r.fixed_size:
        problems.append(f"{path}: decimal base changed from {_base(w)} to {_base(r)}")
    if r.scale < w.scale or r.precision - r.scale < w.precision - w.scale:
        problems.append(
            f"{path}: {describe(w)} became {describe(r)}; a decimal may only widen "
            "(no fewer digits before or after the point)"
        )


def _base(d: Decimal) -> str:
    return "bytes" if d.fixed_size is None else f"fixed({d.fixed_size})"


def _check_primitive(w: Primitive, r: Primitive, path: str, problems: list[str]) -> None:
    if w == r:
        return
    if w.logical != r.logical:
        problems.append(
            f"{path}: logical type changed from {w.logical or 'none'} to {r.logical or 'none'}"
        )
    elif (w.kind, r.kind) not in _PROMOTIONS:
        problems.append(f"{path}: type changed from {w.kind} to {r.kind} (not a promotion)")


# -- columns of renamed fields -------------------------------------------------------


def assign_columns(versions: Sequence[Record]) -> Record:
    """The last of ``versions`` (oldest first) with the ``history`` of each renamed
    field filled in, so that its column keeps the name it was created with.

    Raises :class:`SchemaError` when two fields would share a column or a stored
    name (e.g. ``a`` renamed to ``b`` while a new field takes the name ``a``).
    """
    current = versions[0]
    for newer in versions[1:]:
        resolved = _resolve(current, newer)
        assert isinstance(resolved, Record)
        current = resolved
    _check_columns(current, current.short_name)
    return current


def renamed_columns(record: Record, prefix: str = "", column_prefix: str = "") -> dict[str, str]:
    """``{"field.path": "column.path"}`` for every field whose column is named otherwise."""
    out: dict[str, str] = {}
    for f in record.fields:
        path, column = f"{prefix}{f.name}", f"{column_prefix}{f.column}"
        if f.column != f.name:
            out[path] = column
        for inner in _records_in(f.type):
            out.update(renamed_columns(inner, f"{path}.", f"{column}."))
    return out


def _records_in(t: AvroType) -> list[Record]:
    """The outermost records in ``t`` (``t`` itself if it is one)."""
    if isinstance(t, Record):
        return [t]
    return [r for inner in inner_types(t) for r in _records_in(inner)]


def _resolve(w: AvroType, r: AvroType) -> AvroType:
    """``r`` with the history of its fields taken from the matching fields of ``w``."""
    if isinstance(r, Nullable):
        return Nullable(_resolve(w.inner if isinstance(w, Nullable) else w, r.inner))
    if isinstance(w, Nullable):
        w = w.inner
    if isinstance(r, Record) and isinstance(w, Record):
        fields = []
        for f in r.fields:
            old = match_field(w, f)
            if old is None:
                fields.append(f)
                continue
            history = f.history
            if old.history or old.name != f.name:
                history = tuple(dict.fromkeys((*old.history, old.name)))
            fields.append(replace(f, type=_resolve(old.type, f.type), history=history))
        return replace(r, fields=tuple(fields))
    if isinstance(r, Array) and isinstance(w, Array):
        return Array(_resolve(w.items, r.items))
    if isinstance(r, Map) and isinstance(w, Map):
        return Map(_resolve(w.values, r.values))
    if isinstance(r, Union) and isinstance(w, Union):
        before = {b.key: b.type for b in w.branches}
        return replace(
            r,
            branches=tuple(
                replace(b, type=_resolve(before[b.key], b.type)) if b.key in before else b
                for b in r.branches
            ),
        )
    return r


def _check_columns(record: Record, path: str) -> None:
    columns: dict[str, str] = {}
    stored: dict[str, str] = {}
    for f in record.fields:
        if f.column in columns:
            raise SchemaError(
                f"{path}.{f.name}: column {f.column!r} would hold both field "
                f"{columns[f.column]!r} and field {f.name!r} (through a name or an alias); "
                "rename one of them"
            )
        columns[f.column] = f.name
        for name in f.stored_names:
            if name in stored and stored[name] != f.name:
                raise SchemaError(
                    f"{path}.{f.name}: stored events call two fields {name!r} ({stored[name]!r} "
                    f"and {f.name!r}, in different versions); reusing a field's old name for "
                    "another field is not supported"
                )
            stored[name] = f.name
        for inner in _records_in(f.type):
            _check_columns(inner, f"{path}.{f.name}")
