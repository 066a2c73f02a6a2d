"""A corpus of Avro schemas and evolutions, checked against fastavro and the ``avro`` package.

``SCHEMAS`` are single schemas (does each parser accept it?); ``EVOLUTIONS`` are
(writer, reader) pairs (can the reader read the writer's data?). ``*_DIFFERENCES``
name the cases where Courier deliberately disagrees, with the reason; the README's
schema section lists the same reasons.
"""

from __future__ import annotations

from typing import Any


def rec(name: str, *fields: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def f(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def one(type_: Any, **extra: Any) -> dict[str, Any]:
    return rec("T", f("f", type_, **extra))


DECIMAL = {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}

# -- single schemas ------------------------------------------------------------------

SCHEMAS: dict[str, dict[str, Any]] = {
    # The specification's own examples.
    "spec-linked-list": rec(
        "LongList",
        f("value", "long"),
        f("next", ["null", "LongList"]),
        aliases=["LinkedLongs"],
    ),
    "spec-enum": one({"type": "enum", "name": "Suit", "symbols": ["SPADES", "HEARTS", "DIAMONDS", "CLUBS"]}),
    "spec-array": one({"type": "array", "items": "string", "default": []}),
    "spec-map": one({"type": "map", "values": "long", "default": {}}),
    "spec-fixed": one({"type": "fixed", "size": 16, "name": "md5"}),
    "spec-union": one(["null", "string"]),
    "spec-names": rec(
        "Example",
        f("inheritNull", {"type": "enum", "name": "Simple", "symbols": ["a", "b"]}),
        f("explicitNamespace", {"type": "fixed", "name": "Simple", "namespace": "explicit", "size": 12}),
        f("fullName", {"type": "record", "name": "a.full.Name", "namespace": "ignored", "fields": [
            f("inheritNamespace", {"type": "enum", "name": "Understanding", "symbols": ["d", "e"]}),
        ]}),
        f("refNull", "Simple"),
        f("refExplicit", "explicit.Simple"),
        f("refInherited", "a.full.Understanding"),
    ),
    "spec-decimal-bytes": one(DECIMAL),
    "spec-decimal-fixed": one({"type": "fixed", "name": "Money", "size": 8, "logicalType": "decimal", "precision": 18, "scale": 4}),
    "spec-uuid": one({"type": "string", "logicalType": "uuid"}),
    "spec-date": one({"type": "int", "logicalType": "date"}),
    "spec-time-millis": one({"type": "int", "logicalType": "time-millis"}),
    "spec-time-micros": one({"type": "long", "logicalType": "time-micros"}),
    "spec-timestamp-millis": one({"type": "long", "logicalType": "timestamp-millis"}),
    "spec-timestamp-micros": one({"type": "long", "logicalType": "timestamp-micros"}),
    "spec-timestamp-nanos": one({"type": "long", "logicalType": "timestamp-nanos"}),
    "spec-local-timestamp-millis": one({"type": "long", "logicalType": "local-timestamp-millis"}),
    "spec-local-timestamp-micros": one({"type": "long", "logicalType": "local-timestamp-micros"}),
    "spec-local-timestamp-nanos": one({"type": "long", "logicalType": "local-timestamp-nanos"}),
    "spec-duration": one({"type": "fixed", "name": "Duration", "size": 12, "logicalType": "duration"}),
    "unknown-logical-type": one({"type": "string", "logicalType": "iso-8601"}),
    "logical-type-on-wrong-base": one({"type": "string", "logicalType": "timestamp-millis"}),
    "decimal-scale-above-precision": one({"type": "bytes", "logicalType": "decimal", "precision": 2, "scale": 3}),
    "decimal-too-wide-for-fixed": one({"type": "fixed", "name": "Small", "size": 2, "logicalType": "decimal", "precision": 9}),
    "decimal-precision-40": one({"type": "bytes", "logicalType": "decimal", "precision": 40, "scale": 2}),
    "decimal-without-precision": one({"type": "bytes", "logicalType": "decimal"}),
    # Unions.
    "union-two-primitives": one(["string", "long"]),
    "union-null-and-two": one(["null", "string", "long"], default=None),
    "union-two-records": one(["null", rec("A", f("a", "int")), rec("B", f("b", "int"))], default=None),
    "union-same-short-name-records": one([rec("x.R", f("a", "int")), rec("y.R", f("b", "int"))]),
    "union-duplicate-branch": one(["string", "long", "string"]),
    "union-two-arrays": one([{"type": "array", "items": "int"}, {"type": "array", "items": "string"}]),
    "union-nested": one(["int", ["null", "string"]]),
    "union-null-twice": one(["null", "null"]),
    # Names and namespaces.
    "same-short-name-two-namespaces": rec(
        "T",
        f("a", rec("n1.X", f("x", "int"))),
        f("b", rec("n2.X", f("y", "int"))),
        f("c", "n1.X"),
        f("d", "n2.X"),
    ),
    "namespace-inherited-by-nested": rec(
        "T",
        f("a", rec("Inner", f("x", "int"))),
        f("b", "com.acme.Inner"),
        namespace="com.acme",
    ),
    "reference-to-wrong-namespace": rec("T", f("a", rec("n1.X", f("x", "int"))), f("b", "wrong.X")),
    "short-reference-across-namespaces": rec(
        "T", f("a", rec("n2.X", f("x", "int"))), f("b", "X"), namespace="n1"
    ),
    "short-reference-to-null-namespace": rec(
        "T",
        f("a", rec("X", f("x", "int"))),
        f("b", rec("Y", f("y", "X"), namespace="n1")),
    ),
    "full-name-defined-twice": rec("T", f("a", rec("n.X", f("x", "int"))), f("b", rec("X", f("y", "int"), namespace="n"))),
    "empty-namespace-is-null-namespace": rec(
        "T", f("a", rec("X", f("x", "int"), namespace="")), f("b", "X"), namespace="n"
    ),
    "namespace-not-a-name": rec("T", f("a", "int"), namespace="1bad"),
    "name-with-dash": rec("T", f("a", {"type": "enum", "name": "has-dash", "symbols": ["A"]})),
    "reference-before-definition": rec("T", f("b", "X"), f("a", rec("X", f("x", "int")))),
    # Aliases.
    "field-aliases": rec("T", f("user_name", "string", aliases=["user", "login"])),
    "record-aliases": rec("T", f("a", rec("X", f("x", "int"), aliases=["OldX", "other.Old"]))),
    "alias-not-a-name": rec("T", f("a", "string", aliases=["1bad"])),
    "aliases-not-a-list": rec("T", f("a", "string", aliases="old")),
    # Other well-formedness rules.
    "duplicate-field": rec("T", f("a", "int"), f("a", "long")),
    "enum-default-not-a-symbol": one({"type": "enum", "name": "E", "symbols": ["A"], "default": "B"}),
    "enum-duplicate-symbols": one({"type": "enum", "name": "E", "symbols": ["A", "A"]}),
    "map-without-values": one({"type": "map"}),
    "array-without-items": one({"type": "array"}),
    "fixed-negative-size": one({"type": "fixed", "name": "F", "size": -1}),
    "array-of-records": one({"type": "array", "items": rec("Item", f("sku", "string"), f("qty", "int"))}),
    "unknown-type": one("Nope"),
}  # fmt: skip

#: Where Courier refuses what fastavro accepts (or the reverse), and why.
PARSE_DIFFERENCES: dict[str, str] = {
    "spec-linked-list": "recursive types have no columnar (Parquet) form",
    "decimal-precision-40": "decimals are stored exactly as decimal128: precision <= 38",
    "decimal-scale-above-precision": (
        "an invalid decimal is refused instead of silently becoming raw bytes"
    ),
    "decimal-too-wide-for-fixed": (
        "an invalid decimal is refused instead of silently becoming raw bytes"
    ),
    "decimal-without-precision": (
        "an invalid decimal is refused instead of silently becoming raw bytes"
    ),
}

# -- evolutions: (writer = old, reader = new) ----------------------------------------

EVOLUTIONS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "add-field-with-default": (rec("T", f("a", "int")), rec("T", f("a", "int"), f("b", "string", default=""))),
    "add-field-without-default": (rec("T", f("a", "int")), rec("T", f("a", "int"), f("b", "string"))),
    "remove-field": (rec("T", f("a", "int"), f("b", "string")), rec("T", f("a", "int"))),
    "int-to-long": (one("int"), one("long")),
    "int-to-double": (one("int"), one("double")),
    "long-to-float": (one("long"), one("float")),
    "float-to-double": (one("float"), one("double")),
    "long-to-int": (one("long"), one("int")),
    "double-to-float": (one("double"), one("float")),
    "string-to-bytes": (one("string"), one("bytes")),
    "bytes-to-string": (one("bytes"), one("string")),
    "string-to-int": (one("string"), one("int")),
    "make-nullable": (one("string"), one(["null", "string"], default=None)),
    "drop-nullable": (one(["null", "string"], default=None), one("string")),
    "rename-with-alias": (rec("T", f("user", "string")), rec("T", f("user_name", "string", aliases=["user"]))),
    "rename-without-alias": (rec("T", f("user", "string")), rec("T", f("user_name", "string"))),
    "rename-nested-with-alias": (
        rec("T", f("c", rec("C", f("n", "int")))),
        rec("T", f("c", rec("C", f("items", "long", aliases=["n"])))),
    ),
    "rename-with-alias-and-promotion-wrong": (
        rec("T", f("n", "long")),
        rec("T", f("m", "int", aliases=["n"])),
    ),
    "enum-add-symbol": (one({"type": "enum", "name": "E", "symbols": ["A"]}), one({"type": "enum", "name": "E", "symbols": ["A", "B"]})),
    "enum-remove-symbol": (one({"type": "enum", "name": "E", "symbols": ["A", "B"]}), one({"type": "enum", "name": "E", "symbols": ["A"]})),
    "enum-remove-symbol-with-default": (
        one({"type": "enum", "name": "E", "symbols": ["A", "B"]}),
        one({"type": "enum", "name": "E", "symbols": ["A", "U"], "default": "U"}),
    ),
    "fixed-size-change": (one({"type": "fixed", "name": "F", "size": 4}), one({"type": "fixed", "name": "F", "size": 8})),
    "nested-record-renamed": (one(rec("Old", f("x", "int"))), one(rec("New", f("x", "int")))),
    "nested-record-renamed-with-alias": (one(rec("Old", f("x", "int"))), one(rec("New", f("x", "int"), aliases=["Old"]))),
    "enum-renamed": (one({"type": "enum", "name": "E1", "symbols": ["A"]}), one({"type": "enum", "name": "E2", "symbols": ["A"]})),
    "top-level-namespace-change": (rec("T", f("a", "int"), namespace="com.a"), rec("T", f("a", "int"), namespace="com.b")),
    "union-add-branch": (one(["string", "long"]), one(["string", "long", "boolean"])),
    "union-remove-branch": (one(["string", "long", "boolean"]), one(["string", "long"])),
    "union-branch-promoted": (one(["int", "string"]), one(["long", "string"])),
    "nullable-promoted": (one(["null", "int"], default=None), one(["null", "long"], default=None)),
    "value-becomes-union": (one("string"), one(["string", "long"])),
    "union-becomes-value": (one(["string", "long"]), one("string")),
    "nullable-gains-branch": (one(["null", "string"], default=None), one(["null", "string", "long"], default=None)),
    "decimal-widened": (one(DECIMAL), one({**DECIMAL, "precision": 14})),
    "decimal-scale-raised": (one(DECIMAL), one({**DECIMAL, "scale": 3})),
    "decimal-narrowed": (one(DECIMAL), one({**DECIMAL, "precision": 10})),
    "bytes-to-decimal": (one("bytes"), one(DECIMAL)),
    "timestamp-millis-to-long": (one({"type": "long", "logicalType": "timestamp-millis"}), one("long")),
    "nested-add-field-with-default": (
        one(rec("C", f("x", "int"))),
        one(rec("C", f("x", "int"), f("y", "int", default=0))),
    ),
    "array-items-promoted": (one({"type": "array", "items": "int"}), one({"type": "array", "items": "long"})),
    "map-values-narrowed": (one({"type": "map", "values": "long"}), one({"type": "map", "values": "int"})),
    "array-to-map": (one({"type": "array", "items": "int"}), one({"type": "map", "values": "int"})),
}  # fmt: skip

#: Where Courier's answer differs from ``avro.compatibility``, and why.
COMPAT_DIFFERENCES: dict[str, str] = {
    "string-to-bytes": "stored bytes are byte lists and strings text: old events would not decode",
    "bytes-to-string": "stored bytes are byte lists and strings text: old events would not decode",
    "nested-record-renamed": "names of named types are in neither the stored data nor the columns",
    "enum-renamed": "names of named types are in neither the stored data nor the columns",
    "union-branch-promoted": 'stored union values are {"<branch>": value}: a branch keeps its key',
    "value-becomes-union": 'stored union values are {"<branch>": value}, plain old values are not',
    "nullable-gains-branch": 'a ["null", T] value is stored plain, other unions as {"<branch>": value}',
    "decimal-scale-raised": "a decimal may only widen: one integer digit fewer may not hold old values",
    "decimal-narrowed": "a decimal may only widen: fewer digits may not hold old values",
    "bytes-to-decimal": "the stored forms of a logical type and its base type differ",
    "timestamp-millis-to-long": "the stored forms of a logical type and its base type differ",
}
