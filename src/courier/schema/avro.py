"""Parse Avro record schemas (JSON) into a small typed tree.

Only the subset of Avro that maps 1:1 onto Arrow/Parquet columns is accepted:
primitives, records, arrays, maps, enums, fixed, nullable unions
(``["null", T]`` / ``[T, "null"]``) and the logical types ``timestamp-millis``,
``timestamp-micros`` (on long), ``date`` (on int) and ``uuid`` (on string).
Named types may be referred to by name after their definition; recursive types
are rejected because they have no columnar form. Every error names the path of
the offending field, e.g. ``PlaySong.context.device``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from courier.errors import SchemaError
from courier.model import RESERVED_FIELDS, is_valid_type_name

PRIMITIVES: Final = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)
#: Logical type -> the primitive it annotates.
LOGICAL_TYPES: Final = {
    "timestamp-millis": "long",
    "timestamp-micros": "long",
    "date": "int",
    "uuid": "string",
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


#: Marker for a field without an Avro ``default``.
NO_DEFAULT: Final = _NoDefault()


@dataclass(frozen=True)
class Primitive:
    kind: str
    logical: str | None = None


@dataclass(frozen=True)
class Fixed:
    name: str
    size: int


@dataclass(frozen=True)
class Enum:
    name: str
    symbols: tuple[str, ...]
    default: str | None = None


@dataclass(frozen=True)
class Array:
    items: AvroType


@dataclass(frozen=True)
class Map:
    values: AvroType


@dataclass(frozen=True)
class Nullable:
    inner: AvroType


@dataclass(frozen=True)
class Field:
    name: str
    type: AvroType
    default: Any = NO_DEFAULT

    @property
    def has_default(self) -> bool:
        return self.default is not NO_DEFAULT


@dataclass(frozen=True)
class Record:
    name: str
    fields: tuple[Field, ...]


AvroType: TypeAlias = Primitive | Fixed | Enum | Array | Map | Nullable | Record


def parse_schema(avro: Any, *, builtin: bool = False) -> Record:
    """Parse a top-level Avro record schema into a :class:`Record` tree.

    The record name is the event type and must satisfy
    :func:`courier.model.is_valid_type_name` unless ``builtin`` is set; its
    fields may not use the reserved envelope names.
    """
    if not isinstance(avro, dict) or avro.get("type") != "record":
        raise SchemaError('an event schema must be an Avro record ({"type": "record", ...})')
    name = avro.get("name")
    if not isinstance(name, str) or not (
        is_valid_type_name(name) or (builtin and _NAME.fullmatch(name))
    ):
        raise SchemaError(
            f"record name {name!r} is not a valid event type name ([A-Z][A-Za-z0-9_]{{0,63}})"
        )
    record = _Parser().parse(avro, name)
    assert isinstance(record, Record)
    for f in record.fields:
        if f.name in RESERVED_FIELDS:
            raise SchemaError(
                f"{name}.{f.name}: field name {f.name!r} is reserved for the envelope "
                f"({', '.join(sorted(RESERVED_FIELDS))})"
            )
    return record


def describe(t: AvroType) -> str:
    """Short human-readable form of a type, for error messages."""
    if isinstance(t, Primitive):
        return f"{t.kind}({t.logical})" if t.logical else t.kind
    if isinstance(t, Nullable):
        return f'["null", {describe(t.inner)}]'
    if isinstance(t, Array):
        return f"array<{describe(t.items)}>"
    if isinstance(t, Map):
        return f"map<{describe(t.values)}>"
    if isinstance(t, Fixed):
        return f"fixed({t.size})"
    if isinstance(t, Enum):
        return "enum"
    return f"record {t.name}"


class _Parser:
    def __init__(self) -> None:
        self._named: dict[str, AvroType] = {}
        self._in_progress: set[str] = set()

    def parse(self, s: Any, path: str) -> AvroType:
        if isinstance(s, str):
            return self._parse_name(s, path)
        if isinstance(s, list):
            return self._parse_union(s, path)
        if not isinstance(s, dict):
            raise SchemaError(f"{path}: {s!r} is not an Avro type")
        kind = s.get("type")
        logical = s.get("logicalType")
        if logical is not None:
            return self._parse_logical(kind, logical, path)
        if kind in PRIMITIVES:
            return Primitive(kind)
        if kind == "record":
            return self._define(s, path, self._build_record)
        if kind == "enum":
            return self._define(s, path, self._build_enum)
        if kind == "fixed":
            return self._define(s, path, self._build_fixed)
        if kind == "array":
            if "items" not in s:
                raise SchemaError(f"{path}: array needs 'items'")
            return Array(self.parse(s["items"], f"{path}[]"))
        if kind == "map":
            if "values" not in s:
                raise SchemaError(f"{path}: map needs 'values'")
            return Map(self.parse(s["values"], f"{path}{{}}"))
        if isinstance(kind, dict | list):
            return self.parse(kind, path)
        if isinstance(kind, str):
            return self._parse_name(kind, path)
        raise SchemaError(f"{path}: type {kind!r} is not supported")

    def _parse_name(self, name: str, path: str) -> AvroType:
        if name in PRIMITIVES:
            return Primitive(name)
        if name in self._in_progress or name.rsplit(".", 1)[-1] in self._in_progress:
            raise SchemaError(f"{path}: recursive type {name!r} is not supported")
        found = self._named.get(name) or self._named.get(name.rsplit(".", 1)[-1])
        if found is None:
            raise SchemaError(f"{path}: unknown type {name!r}")
        return found

    def _parse_union(self, branches: list[Any], path: str) -> AvroType:
        shown = "[" + ",".join(_short(b) for b in branches) + "]"
        nulls = [b for b in branches if b == "null"]
        others = [b for b in branches if b != "null"]
        if len(branches) != 2 or len(nulls) != 1 or isinstance(others[0], list):
            raise SchemaError(
                f'{path}: union {shown} is not supported; only ["null", T] unions are'
            )
        return Nullable(self.parse(others[0], path))

    def _parse_logical(self, kind: Any, logical: Any, path: str) -> AvroType:
        base = LOGICAL_TYPES.get(logical) if isinstance(logical, str) else None
        if base is None:
            raise SchemaError(
                f"{path}: logical type {logical!r} is not supported "
                f"(supported: {', '.join(LOGICAL_TYPES)})"
            )
        if kind != base:
            raise SchemaError(f"{path}: logical type {logical!r} must annotate {base!r}")
        return Primitive(base, logical)

    def _define(self, s: dict[str, Any], path: str, build: Any) -> AvroType:
        name = s.get("name")
        if not isinstance(name, str) or not all(_NAME.fullmatch(p) for p in name.split(".")):
            raise SchemaError(f"{path}: {s.get('type')} needs a valid 'name', got {name!r}")
        short = name.rsplit(".", 1)[-1]
        if short in self._named or short in self._in_progress:
            raise SchemaError(f"{path}: type name {short!r} is defined twice")
        self._in_progress.add(short)
        try:
            t: AvroType = build(s, short, path)
        finally:
            self._in_progress.discard(short)
        self._named[short] = t
        namespace = s.get("namespace")
        full = name if "." in name or not namespace else f"{namespace}.{name}"
        self._named[full] = t
        return t

    def _build_record(self, s: dict[str, Any], name: str, path: str) -> Record:
        raw_fields = s.get("fields")
        if not isinstance(raw_fields, list):
            raise SchemaError(f"{path}: record needs a 'fields' list")
        fields: list[Field] = []
        seen: set[str] = set()
        for raw in raw_fields:
            fname = raw.get("name") if isinstance(raw, dict) else None
            if not isinstance(fname, str) or not _NAME.fullmatch(fname):
                raise SchemaError(f"{path}: field name {fname!r} must match [A-Za-z_][A-Za-z0-9_]*")
            fpath = f"{path}.{fname}"
            if fname in seen:
                raise SchemaError(f"{fpath}: field is defined twice")
            seen.add(fname)
            if "type" not in raw:
                raise SchemaError(f"{fpath}: field needs a 'type'")
            ftype = self.parse(raw["type"], fpath)
            default = raw.get("default", NO_DEFAULT)
            if default is not NO_DEFAULT:
                _check_default(ftype, default, fpath)
            fields.append(Field(fname, ftype, default))
        return Record(name, tuple(fields))

    def _build_enum(self, s: dict[str, Any], name: str, path: str) -> Enum:
        symbols = s.get("symbols")
        if not isinstance(symbols, list) or not symbols:
            raise SchemaError(f"{path}: enum needs a non-empty 'symbols' list")
        for sym in symbols:
            if not isinstance(sym, str) or not _NAME.fullmatch(sym):
                raise SchemaError(f"{path}: enum symbol {sym!r} must match [A-Za-z_][A-Za-z0-9_]*")
        if len(set(symbols)) != len(symbols):
            raise SchemaError(f"{path}: enum symbols must be unique")
        default = s.get("default")
        if default is not None and default not in symbols:
            raise SchemaError(f"{path}: enum default {default!r} is not one of its symbols")
        return Enum(name, tuple(symbols), default)

    def _build_fixed(self, s: dict[str, Any], name: str, path: str) -> Fixed:
        size = s.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise SchemaError(f"{path}: fixed needs a non-negative integer 'size'")
        return Fixed(name, size)


def _short(branch: Any) -> str:
    if isinstance(branch, str):
        return f'"{branch}"'
    if isinstance(branch, dict):
        inner = branch.get("logicalType") or branch.get("type")
        return f'"{inner}"' if isinstance(inner, str) else "{...}"
    return "[...]"


def _check_default(t: AvroType, value: Any, path: str) -> None:
    """Reject defaults whose JSON shape cannot be a value of the type."""
    ok: bool
    if isinstance(t, Nullable):
        ok = value is None or _default_fits(t.inner, value)
    else:
        ok = _default_fits(t, value)
    if not ok:
        raise SchemaError(f"{path}: default {value!r} is not a valid {describe(t)}")


def _default_fits(t: AvroType, v: Any) -> bool:
    if isinstance(t, Nullable):
        return v is None or _default_fits(t.inner, v)
    if isinstance(t, Primitive):
        if t.kind == "null":
            return v is None
        if t.kind == "boolean":
            return isinstance(v, bool)
        if t.kind in ("int", "long"):
            return isinstance(v, int) and not isinstance(v, bool)
        if t.kind in ("float", "double"):
            return isinstance(v, int | float) and not isinstance(v, bool)
        return isinstance(v, str)
    if isinstance(t, Fixed):
        return isinstance(v, str) and len(v) == t.size
    if isinstance(t, Enum):
        return v in t.symbols
    if isinstance(t, Array):
        return isinstance(v, list) and all(_default_fits(t.items, x) for x in v)
    if isinstance(t, Map):
        return isinstance(v, dict) and all(_default_fits(t.values, x) for x in v.values())
    return isinstance(v, dict) and all(
        (f.name in v and _default_fits(f.type, v[f.name])) or (f.name not in v and f.has_default)
        for f in t.fields
    )
