"""Courier's Avro parsing and compatibility against fastavro and the ``avro`` package.

Every schema of :mod:`avro_corpus` is parsed by Courier, ``fastavro.parse_schema``
and ``avro.schema.parse``; every evolution is checked by Courier and by
``avro.compatibility``. Courier must agree with the libraries except where a
deliberate difference is listed (and documented in the README's schema section).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import avro.compatibility
import avro.schema
import fastavro
import pytest
from avro_corpus import COMPAT_DIFFERENCES, EVOLUTIONS, PARSE_DIFFERENCES, SCHEMAS

from courier.schema import check_backward_compatible, parse_schema
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


def accepts(parse: Callable[[], Any]) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # avro warns about ignored logical types
            parse()
    except Exception:
        return False
    return True


@pytest.mark.parametrize("name", SCHEMAS)
def test_courier_parses_the_corpus_as_fastavro_and_avro_do(name: str) -> None:
    schema = SCHEMAS[name]
    courier = accepts(lambda: parse_schema(schema, builtin=True))
    by_fastavro = accepts(lambda: fastavro.parse_schema(schema))
    by_avro = accepts(lambda: avro.schema.parse(json.dumps(schema)))
    if name in PARSE_DIFFERENCES:
        assert not courier and (by_fastavro or by_avro), "a documented difference disappeared"
        return
    # Where the two libraries disagree (fastavro is laxer), Courier sides with one.
    assert courier in (by_fastavro, by_avro)
    if courier and by_fastavro:
        assert named_types(parse_schema(schema, builtin=True)) == fastavro_names(
            fastavro.parse_schema(schema)
        ), "full names resolve differently"


@pytest.mark.parametrize("name", EVOLUTIONS)
def test_courier_judges_evolutions_as_avro_compatibility_does(name: str) -> None:
    writer, reader = EVOLUTIONS[name]
    courier = check_backward_compatible(writer, reader) == []
    checker = avro.compatibility.ReaderWriterCompatibilityChecker()
    result = checker.get_compatibility(
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer))
    )
    by_avro = result.compatibility == avro.compatibility.SchemaCompatibilityType.compatible
    if name in COMPAT_DIFFERENCES:
        assert courier != by_avro, "a documented difference disappeared"
    else:
        assert courier == by_avro


def test_the_corpus_has_at_least_50_schemas() -> None:
    assert len(SCHEMAS) + 2 * len(EVOLUTIONS) >= 50 and len(SCHEMAS) >= 50


# -- full names, in the order fastavro's parsed schema lists them ----------------------


def named_types(t: AvroType) -> list[str]:
    """Full names of named types as met in a walk: each definition, then each reference."""
    return list(_walk(t, set()))


def _walk(t: AvroType, seen: set[str]) -> Iterator[str]:
    name = t.name if isinstance(t, Record | Enum | Fixed | Decimal) else None
    if name is not None:
        yield name
        if name in seen:
            return
        seen.add(name)
    if isinstance(t, Nullable):
        yield from _walk(t.inner, seen)
    elif isinstance(t, Union):
        for b in t.branches:
            yield from _walk(b.type, seen)
    elif isinstance(t, Array):
        yield from _walk(t.items, seen)
    elif isinstance(t, Map):
        yield from _walk(t.values, seen)
    elif isinstance(t, Record):
        for f in t.fields:
            yield from _walk(f.type, seen)
    else:
        assert isinstance(t, Primitive | Enum | Fixed | Decimal)


def fastavro_names(s: Any) -> list[str]:
    if isinstance(s, str):
        primitives = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
        return [] if s in primitives else [s]
    if isinstance(s, list):
        return [n for b in s for n in fastavro_names(b)]
    out = [s["name"]] if s.get("type") in ("record", "enum", "fixed", "error") else []
    if s.get("type") in ("record", "error"):
        out += [n for f in s["fields"] for n in fastavro_names(f["type"])]
    elif s.get("type") == "array":
        out += fastavro_names(s["items"])
    elif s.get("type") == "map":
        out += fastavro_names(s["values"])
    elif isinstance(s.get("type"), dict | list):
        out += fastavro_names(s["type"])
    return out
