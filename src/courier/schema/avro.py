"""Parse Avro record schemas (JSON) into a small typed tree.

What is accepted, per the Avro 1.12 specification:

- primitives, records, arrays, maps, enums, fixed;
- unions: ``["null", T]`` (a nullable column; its values may also come in Avro's
  JSON encoding ``{"<T>": value}``) and any other union, stored as a struct with
  one nullable child per branch (:class:`Union`);
- logical types: ``decimal`` (on bytes and fixed, exact), ``date``,
  ``time-millis``, ``time-micros``, ``timestamp-millis``/``-micros``/``-nanos``,
  ``local-timestamp-millis``/``-micros``/``-nanos`` and ``uuid``. A logical type
  that is unknown or sits on another base type is ignored and the base type is
  used, as the spec says; an invalid ``decimal`` is refused instead (a money
  column must never silently become raw bytes);
- names and namespaces: a named type's full name is its dotted ``name``, else
  ``namespace.name``, else the enclosing namespace plus ``name``; a reference
  without a dot is looked up in the enclosing namespace only (as fastavro and
  the ``avro`` package do);
- ``aliases`` on fields and named types (used by the compatibility check).

Recursive types are rejected because they have no columnar form. Every error
names the path of the offending field, e.g. ``PlaySong.context.device``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, TypeGuard

from courier.errors import SchemaError
from courier.model import RESERVED_FIELDS, is_valid_type_name

PRIMITIVES: Final = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)
#: Logical type -> the primitive it annotates (``decimal`` is separate: bytes or fixed).
LOGICAL_TYPES: Final = {
    "date": "int",
    "time-millis": "int",
    "time-micros": "long",
    "timestamp-millis": "long",
    "timestamp-micros": "long",
    "timestamp-nanos": "long",
    "local-timestamp-millis": "long",
    "local-timestamp-micros": "long",
    "local-timestamp-nanos": "long",
    "uuid": "string",
}
#: The widest decimal stored exactly: Arrow/Parquet decimal128, read by DuckDB and Spark.
MAX_DECIMAL_PRECISION: Final = 38
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
class Decimal:
    """``decimal`` on ``bytes`` (``fixed_size`` None) or on a ``fixed``."""

    precision: int
    scale: int
    fixed_size: int | None = None
    #: The full name of the fixed it annotates, if any.
    name: str | None = None


@dataclass(frozen=True)
class Fixed:
    name: str
    size: int
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Enum:
    name: str
    symbols: tuple[str, ...]
    default: str | None = None
    aliases: tuple[str, ...] = ()


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
class Branch:
    """One non-null branch of a :class:`Union`; ``key`` is its name in Avro's JSON
    encoding (``"long"``, ``"array"``, ``"com.acme.Item"``) and its struct child."""

    key: str
    type: AvroType


@dataclass(frozen=True)
class Union:
    """A union other than ``["null", T]``: a struct with one child per non-null
    branch, of which exactly one is set. Null, if a branch, wraps it in Nullable."""

    branches: tuple[Branch, ...]
    #: The key of the first declared branch (``"null"`` if null is first): the
    #: branch an Avro default is written in.
    first: str = ""


@dataclass(frozen=True)
class Field:
    name: str
    type: AvroType
    default: Any = NO_DEFAULT
    aliases: tuple[str, ...] = ()
    #: The names this field had in earlier schema versions, oldest first, when it
    #: was renamed (see :func:`courier.schema.compat.assign_columns`).
    history: tuple[str, ...] = ()

    @property
    def has_default(self) -> bool:
        return self.default is not NO_DEFAULT

    @property
    def column(self) -> str:
        """The bucket column (or struct child) name: the field's first name, so that
        a rename never changes the columns of buckets already written."""
        return self.history[0] if self.history else self.name

    @property
    def stored_names(self) -> tuple[str, ...]:
        """The keys this field's values have in stored events of any version."""
        return tuple(dict.fromkeys((self.name, *self.history)))


@dataclass(frozen=True)
class Record:
    name: str
    fields: tuple[Field, ...]
    aliases: tuple[str, ...] = ()

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


AvroType: TypeAlias = Primitive | Decimal | Fixed | Enum | Array | Map | Nullable | Union | Record


def event_type_name(avro: Any) -> str | None:
    """The event type a schema registers: its record's short name (no namespace)."""
    name = avro.get("name") if isinstance(avro, dict) else None
    return name.rsplit(".", 1)[-1] if isinstance(name, str) else None


def parse_schema(avro: Any, *, builtin: bool = False) -> Record:
    """Parse a top-level Avro record schema into a :class:`Record` tree.

    The record's short name is the event type and must satisfy
    :func:`courier.model.is_valid_type_name` unless ``builtin`` is set; its
    fields may not use the reserved envelope names.
    """
    if not isinstance(avro, dict) or avro.get("type") != "record":
        raise SchemaError('an event schema must be an Avro record ({"type": "record", ...})')
    short = event_type_name(avro)
    if short is None or not (is_valid_type_name(short) or (builtin and _NAME.fullmatch(short))):
        raise SchemaError(
            f"record name {avro.get('name')!r} is not a valid event type name "
            "([A-Z][A-Za-z0-9_]{0,63}, optionally after a namespace)"
        )
    record = _Parser().parse(avro, short, "")
    assert isinstance(record, Record)
    for f in record.fields:
        if f.name in RESERVED_FIELDS:
            raise SchemaError(
                f"{short}.{f.name}: field name {f.name!r} is reserved for the envelope "
                f"({', '.join(sorted(RESERVED_FIELDS))})"
            )
    return record


def inner_types(t: AvroType) -> tuple[AvroType, ...]:
    """The types directly inside ``t``: a nullable's type, an array's items, a map's
    values, a union's branches, a record's fields; none for the rest."""
    if isinstance(t, Nullable):
        return (t.inner,)
    if isinstance(t, Array):
        return (t.items,)
    if isinstance(t, Map):
        return (t.values,)
    if isinstance(t, Union):
        return tuple(b.type for b in t.branches)
    if isinstance(t, Record):
        return tuple(f.type for f in t.fields)
    return ()


def describe(t: AvroType) -> str:
    """Short human-readable form of a type, for error messages."""
    if isinstance(t, Primitive):
        return f"{t.kind}({t.logical})" if t.logical else t.kind
    if isinstance(t, Decimal):
        return f"decimal({t.precision},{t.scale})"
    if isinstance(t, Nullable):
        return f'["null", {describe(t.inner)}]'
    if isinstance(t, Union):
        return "union[" + ", ".join(b.key for b in t.branches) + "]"
    if isinstance(t, Array):
        return f"array<{describe(t.items)}>"
    if isinstance(t, Map):
        return f"map<{describe(t.values)}>"
    if isinstance(t, Fixed):
        return f"fixed({t.size})"
    if isinstance(t, Enum):
        return "enum"
    return f"record {t.name}"


def branch_key(t: AvroType) -> str:
    """A union branch's name in Avro's JSON encoding (full name for named types)."""
    if isinstance(t, Primitive):
        return t.kind
    if isinstance(t, Decimal):
        return t.name or "bytes"
    if isinstance(t, Array):
        return "array"
    if isinstance(t, Map):
        return "map"
    if isinstance(t, Fixed | Enum | Record):
        return t.name
    raise AssertionError(f"no branch key for {t!r}")


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _namespace_of(full: str) -> str:
    return full.rsplit(".", 1)[0] if "." in full else ""


class _Parser:
    def __init__(self) -> None:
        self._named: dict[str, AvroType] = {}
        self._in_progress: set[str] = set()

    def parse(self, s: Any, path: str, ns: str) -> AvroType:
        if isinstance(s, str):
            return self._parse_name(s, path, ns)
        if isinstance(s, list):
            return self._parse_union(s, path, ns)
        if not isinstance(s, dict):
            raise SchemaError(f"{path}: {s!r} is not an Avro type")
        kind = s.get("type")
        logical = s.get("logicalType")
        if logical is not None:
            parsed = self._parse_logical(s, kind, logical, path, ns)
            if parsed is not None:
                return parsed
        if isinstance(kind, dict | list):
            return self.parse(kind, path, ns)
        if kind in PRIMITIVES:
            return Primitive(kind)
        if kind == "record" or kind == "error":
            return self._define(s, path, ns, self._build_record)
        if kind == "enum":
            return self._define(s, path, ns, self._build_enum)
        if kind == "fixed":
            return self._define(s, path, ns, self._build_fixed)
        if kind == "array":
            if "items" not in s:
                raise SchemaError(f"{path}: array needs 'items'")
            return Array(self.parse(s["items"], f"{path}[]", ns))
        if kind == "map":
            if "values" not in s:
                raise SchemaError(f"{path}: map needs 'values'")
            return Map(self.parse(s["values"], f"{path}{{}}", ns))
        if isinstance(kind, str):
            return self._parse_name(kind, path, ns)
        raise SchemaError(f"{path}: type {kind!r} is not supported")

    def _parse_name(self, name: str, path: str, ns: str) -> AvroType:
        if name in PRIMITIVES:
            return Primitive(name)
        full = _full_name(name, ns)
        if full in self._in_progress:
            raise SchemaError(f"{path}: recursive type {name!r} is not supported")
        found = self._named.get(full)
        if found is None:
            where = "" if full == name else f" (a name without a dot means {full!r} here)"
            raise SchemaError(f"{path}: unknown type {name!r}{where}")
        return found

    def _parse_union(self, branches: list[Any], path: str, ns: str) -> AvroType:
        nulls = sum(1 for b in branches if b == "null")
        if nulls > 1:
            raise SchemaError(f'{path}: union has "null" more than once')
        if any(isinstance(b, list) for b in branches):
            raise SchemaError(f"{path}: a union may not directly contain another union")
        others = [b for b in branches if b != "null"]
        if not others:
            raise SchemaError(f"{path}: a union needs a branch other than null")
        parsed = [self.parse(b, path, ns) for b in others]
        if any(isinstance(t, Nullable | Union) for t in parsed):
            raise SchemaError(f"{path}: a union may not directly contain another union")
        if nulls and len(parsed) == 1:
            return Nullable(parsed[0])
        out: list[Branch] = []
        for t in parsed:
            key = branch_key(t)
            if any(b.key == key for b in out):
                raise SchemaError(f"{path}: union has two branches of type {key!r}")
            out.append(Branch(key, t))
        first = "null" if branches[0] == "null" else out[0].key
        union = Union(tuple(out), first)
        return Nullable(union) if nulls else union

    def _parse_logical(
        self, s: dict[str, Any], kind: Any, logical: Any, path: str, ns: str
    ) -> AvroType | None:
        """The logical type, or None to use the base type (unknown or misplaced)."""
        if logical == "decimal" and kind in ("bytes", "fixed"):
            return self._parse_decimal(s, kind, path, ns)
        if (
            isinstance(logical, str)
            and isinstance(kind, str)
            and LOGICAL_TYPES.get(logical) == kind
        ):
            return Primitive(kind, logical)
        return None

    def _parse_decimal(self, s: dict[str, Any], kind: str, path: str, ns: str) -> Decimal:
        precision, scale = s.get("precision"), s.get("scale", 0)
        if not _is_int(precision) or precision < 1:
            raise SchemaError(
                f"{path}: decimal needs an integer 'precision' >= 1, got {precision!r}"
            )
        if not _is_int(scale) or not 0 <= scale <= precision:
            raise SchemaError(
                f"{path}: decimal 'scale' must be an integer from 0 to its precision "
                f"{precision}, got {scale!r}"
            )
        if precision > MAX_DECIMAL_PRECISION:
            raise SchemaError(
                f"{path}: decimal precision {precision} is more than {MAX_DECIMAL_PRECISION}, "
                "the widest decimal Courier stores exactly (Parquet decimal128)"
            )
        if kind == "bytes":
            return Decimal(precision, scale)
        fixed = self._define(s, path, ns, self._build_fixed)
        assert isinstance(fixed, Fixed)
        most = len(str(2 ** (8 * fixed.size - 1) - 1)) - 1 if fixed.size else 0
        if precision > most:
            raise SchemaError(
                f"{path}: decimal precision {precision} does not fit in fixed({fixed.size}) "
                f"(at most {most} digits)"
            )
        return Decimal(precision, scale, fixed.size, fixed.name)

    def _define(self, s: dict[str, Any], path: str, ns: str, build: Any) -> AvroType:
        name = s.get("name")
        if not isinstance(name, str) or not all(_NAME.fullmatch(p) for p in name.split(".")):
            raise SchemaError(f"{path}: {s.get('type')} needs a valid 'name', got {name!r}")
        namespace = s.get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            raise SchemaError(f"{path}: 'namespace' must be a string, got {namespace!r}")
        if namespace and not all(_NAME.fullmatch(p) for p in namespace.split(".")):
            raise SchemaError(f"{path}: namespace {namespace!r} is not a dotted name")
        if "." in name:
            full = name
        elif namespace is not None:
            full = _full_name(name, namespace)
        else:
            full = _full_name(name, ns)
        if full.rsplit(".", 1)[-1] in PRIMITIVES:
            raise SchemaError(f"{path}: {full!r} redefines the primitive type name")
        if full in self._named or full in self._in_progress:
            raise SchemaError(f"{path}: type name {full!r} is defined twice")
        inner_ns = _namespace_of(full)
        aliases = _aliases(s, path, lambda a: _full_name(a, inner_ns))
        self._in_progress.add(full)
        try:
            t: AvroType = build(s, full, aliases, path, inner_ns)
        finally:
            self._in_progress.discard(full)
        self._named[full] = t
        return t

    def _build_record(
        self, s: dict[str, Any], name: str, aliases: tuple[str, ...], path: str, ns: str
    ) -> Record:
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
            # An alias may name another field (a chain of renames); assign_columns
            # refuses the renames whose stored names would be ambiguous.
            faliases = _aliases(raw, fpath, lambda a: a)
            ftype = self.parse(raw["type"], fpath, ns)
            default = raw.get("default", NO_DEFAULT)
            if default is not NO_DEFAULT:
                _check_default(ftype, default, fpath)
            fields.append(Field(fname, ftype, default, faliases))
        return Record(name, tuple(fields), aliases)

    def _build_enum(
        self, s: dict[str, Any], name: str, aliases: tuple[str, ...], path: str, ns: str
    ) -> Enum:
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
        return Enum(name, tuple(symbols), default, aliases)

    def _build_fixed(
        self, s: dict[str, Any], name: str, aliases: tuple[str, ...], path: str, ns: str
    ) -> Fixed:
        size = s.get("size")
        if not _is_int(size) or size < 0:
            raise SchemaError(f"{path}: fixed needs a non-negative integer 'size'")
        return Fixed(name, size, aliases)


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _aliases(s: dict[str, Any], path: str, qualify: Any) -> tuple[str, ...]:
    raw = s.get("aliases", [])
    if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
        raise SchemaError(f"{path}: 'aliases' must be a list of names, got {raw!r}")
    return tuple(qualify(a) for a in raw)


def _check_default(t: AvroType, value: Any, path: str) -> None:
    """Reject defaults whose JSON shape cannot be a value of the type."""
    ok: bool
    if isinstance(t, Nullable) and not isinstance(t.inner, Union):
        # Lenient for ["null", T]: either a null or a T default, whatever the order.
        ok = value is None or _default_fits(t.inner, value)
    else:
        ok = _default_fits(t, value)
    if not ok:
        hint = ""
        if isinstance(t, Decimal):
            hint = ' (a decimal default is Avro\'s bytes string of the unscaled value, e.g. "\\u0000" for 0)'
        elif isinstance(t, Union | Nullable):
            hint = " (a union's default is a value of its first branch)"
        raise SchemaError(f"{path}: default {value!r} is not a valid {describe(t)}{hint}")


def _default_fits(t: AvroType, v: Any) -> bool:
    if isinstance(t, Nullable):
        if isinstance(t.inner, Union):
            return v is None if t.inner.first == "null" else _default_fits(t.inner, v)
        return v is None or _default_fits(t.inner, v)
    if isinstance(t, Union):
        first = next(b for b in t.branches if b.key == t.first)
        return _default_fits(first.type, v)
    if isinstance(t, Primitive):
        if t.kind == "null":
            return v is None
        if t.kind == "boolean":
            return isinstance(v, bool)
        if t.kind in ("int", "long"):
            return _is_int(v)
        if t.kind in ("float", "double"):
            return isinstance(v, int | float) and not isinstance(v, bool)
        return isinstance(v, str)
    if isinstance(t, Decimal):
        from courier.schema._decimal import default_value

        return default_value(t, v) is not None
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
