"""Avro as teams already write it, through the real gateway, writer and closer.

One stack (a real nats-server, the gateway app with its NATS sink, a writer and
a closer) carries every case of issue 14: schemas are registered with
``PUT /v1/schemas/{type}``, events sent with ``POST /v1/events``, and the closed
buckets read back with pyarrow (``BucketReader``) and with DuckDB.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pyarrow as pa

from courier.gateway import create_app
from courier.model import bucket_start
from courier.settings import Settings, settings_env
from courier_testing import FAST, open_pipeline

UTC = dt.UTC

PAYMENT = {
    "type": "record",
    "name": "Payment",
    "namespace": "com.acme.billing",
    "fields": [
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}},
        {"name": "fee", "type": {"type": "fixed", "name": "Fee", "size": 8, "logicalType": "decimal", "precision": 9, "scale": 4}},
        {"name": "refund", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}], "default": None},
        {"name": "splits", "type": {"type": "array", "items": {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 1}}, "default": []},
    ],
}  # fmt: skip
CLOCK = {
    "type": "record",
    "name": "Clock",
    "fields": [
        {"name": "ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "ns", "type": {"type": "long", "logicalType": "timestamp-nanos"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "tm", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "tu", "type": {"type": "long", "logicalType": "time-micros"}},
        {"name": "lm", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "lu", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
        {"name": "ln", "type": {"type": "long", "logicalType": "local-timestamp-nanos"}},
        {"name": "odd", "type": {"type": "string", "logicalType": "iso-8601"}},
        {"name": "misplaced", "type": {"type": "string", "logicalType": "timestamp-millis"}},
    ],
}  # fmt: skip
NAMES = {
    "type": "record",
    "name": "n1.Names",
    "fields": [
        {"name": "a", "type": {"type": "record", "name": "X", "fields": [{"name": "x", "type": "int"}]}},
        {"name": "b", "type": {"type": "record", "name": "X", "namespace": "n2", "fields": [
            {"name": "y", "type": "string"},
            # Inherits n2 from its enclosing record: this is n2.Inner.
            {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [{"name": "z", "type": "long"}]}},
        ]}},
        {"name": "c", "type": "X"},  # n1.X: the enclosing namespace, not n2.X
        {"name": "d", "type": "n2.X"},
        {"name": "e", "type": ["null", "n2.Inner"], "default": None},
    ],
}  # fmt: skip
CHOICE = {
    "type": "record",
    "name": "Choice",
    "namespace": "com.acme",
    "fields": [
        {"name": "u", "type": ["string", "long"]},
        {"name": "nu", "type": ["null", "string", {"type": "record", "name": "Ref", "fields": [{"name": "id", "type": "long"}]}], "default": None},
        {"name": "arr", "type": {"type": "array", "items": ["int", "string", {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}]}, "default": []},
        {"name": "d", "type": ["long", "null", {"type": "int", "logicalType": "date"}], "default": 7},
    ],
}  # fmt: skip
RENAMED_V1 = {
    "type": "record",
    "name": "Renamed",
    "fields": [
        {"name": "user", "type": "string"},
        {
            "name": "cart",
            "type": {"type": "record", "name": "Cart", "fields": [{"name": "n", "type": "int"}]},
        },
    ],
}
RENAMED_V2 = {
    "type": "record",
    "name": "Renamed",
    "fields": [
        {"name": "user_name", "type": "string", "aliases": ["user"]},
        {"name": "cart", "type": {"type": "record", "name": "Cart", "fields": [
            {"name": "items", "type": "int", "aliases": ["n"]},
        ]}},
    ],
}  # fmt: skip
SCHEMAS = {
    "Payment": PAYMENT,
    "Clock": CLOCK,
    "Names": NAMES,
    "Choice": CHOICE,
    "Renamed": RENAMED_V1,
}

V1_EVENTS: list[dict[str, Any]] = [
    # Decimals: text, numbers with digits that fit, never via float.
    {"type": "Payment", "id": "pay-1", "data": {"amount": "12.34", "fee": "1.5", "refund": None, "splits": [1.5, "2"]}},
    {"type": "Payment", "id": "pay-2", "data": {"amount": 0.1, "fee": 99999.9999, "refund": {"bytes": "0.01"}}},
    {"type": "Payment", "id": "pay-3", "data": {"amount": -9999999999.99, "fee": 0}},
    {"type": "Payment", "id": "pay-bad-scale", "data": {"amount": "12.345", "fee": 1}},
    {"type": "Payment", "id": "pay-bad-number", "data": {"amount": 1.005, "fee": 1}},
    {"type": "Payment", "id": "pay-bad-precision", "data": {"amount": "1e12", "fee": 1}},
    # Logical types in Avro's JSON encoding (numbers) and as text.
    {"type": "Clock", "id": "clock-num", "data": {
        "ms": 1795000000000, "us": 1795000000000001, "ns": 1795000000000000001, "day": 20000,
        "tm": 36899001, "tu": 36899000001, "lm": 1795000000123, "lu": -1, "ln": 5,
        "odd": "P1D", "misplaced": "not a time"}},
    {"type": "Clock", "id": "clock-text", "data": {
        "ms": "2026-11-18T12:06:40.000999+01:00", "us": "2026-11-18T11:06:40.000001Z",
        "ns": "2026-11-18T11:06:40.000000001Z", "day": "2024-10-04", "tm": "10:14:59.001",
        "tu": "10:14:59.000001", "lm": "2026-11-18T11:06:40.123", "lu": "1969-12-31T23:59:59.999999",
        "ln": "1970-01-01T00:00:00.000000005", "odd": "x", "misplaced": "y"}},
    {"type": "Clock", "id": "clock-bad", "data": {
        "ms": 0, "us": 0, "ns": 0, "day": 0, "tm": 86400000, "tu": 0, "lm": 0, "lu": 0, "ln": 0,
        "odd": "", "misplaced": ""}},
    # Namespaces: same short name in two namespaces; references by full and short name.
    {"type": "Names", "id": "names-1", "data": {
        "a": {"x": 1}, "b": {"y": "b", "inner": {"z": 2}}, "c": {"x": 3},
        "d": {"y": "d", "inner": {"z": 4}}, "e": {"z": 5}}},
    # Unions in Avro's JSON encoding: {"<branch>": value}.
    {"type": "Choice", "id": "choice-1", "data": {
        "u": {"long": 5}, "nu": {"com.acme.Ref": {"id": 7}},
        "arr": [{"int": 1}, {"string": "x"}, {"bytes": "0.25"}], "d": {"int": 19000}}},
    {"type": "Choice", "id": "choice-2", "data": {"u": {"string": "s"}, "nu": {"string": "t"}, "d": None}},
    {"type": "Choice", "id": "choice-3", "data": {"u": {"long": -1}}},
    {"type": "Choice", "id": "choice-bad-plain", "data": {"u": 5}},
    {"type": "Choice", "id": "choice-bad-two", "data": {"u": {"long": 5, "string": "s"}}},
    {"type": "Renamed", "id": "ren-1", "data": {"user": "ann", "cart": {"n": 1}}},
]  # fmt: skip
V2_EVENTS: list[dict[str, Any]] = [
    {"type": "Renamed", "id": "ren-2", "data": {"user_name": "bob", "cart": {"items": 2}}},
    {"type": "Renamed", "id": "ren-bad-old-name", "data": {"user": "eve", "cart": {"items": 3}}},
]


async def test_avro_as_teams_write_it_round_trips_through_gateway_writer_and_closer(
    make_settings: Callable[..., Settings],
) -> None:
    # Six small streams (the five types and _invalid) fit any test machine's disk.
    settings = make_settings(**FAST, nats={"stream_max_bytes": 64 * 1024 * 1024})
    pipeline = await open_pipeline(settings, [])
    app = create_app(pipeline.settings, registry=pipeline.registry)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as gw,
        ):
            for name, schema in SCHEMAS.items():
                r = await gw.put(f"/v1/schemas/{name}", json={"schema": schema})
                assert r.status_code == 200, r.text
            pipeline.start_writer()
            await pipeline.start_closer()

            rejected = await _send(gw, V1_EVENTS)
            assert set(rejected) == {
                "pay-bad-scale", "pay-bad-number", "pay-bad-precision", "clock-bad",
                "choice-bad-plain", "choice-bad-two",
            }  # fmt: skip
            assert "amount" in rejected["pay-bad-scale"] and "2 digit" in rejected["pay-bad-scale"]
            assert "amount" in rejected["pay-bad-number"]
            assert "amount" in rejected["pay-bad-precision"]
            assert "$.data.tm" in rejected["clock-bad"]
            assert "$.data.u" in rejected["choice-bad-plain"]
            assert "exactly one" in rejected["choice-bad-two"]

            # The v1 event of Renamed is staged under v1 before v2 renames its fields; its
            # bucket may close under either version, and reads the same (same columns).
            reader = pipeline.reader
            await pipeline.wait_until(
                lambda: reader.read("Renamed", 0, time.time() + 10, include_open=True).num_rows
            )
            r = await gw.put("/v1/schemas/Renamed", json={"schema": RENAMED_V2})
            assert r.status_code == 200 and r.json()["version"] == 2, r.text
            rejected = await _send(gw, V2_EVENTS)
            assert set(rejected) == {"ren-bad-old-name"}
            described = (await gw.get("/v1/schemas/Renamed")).json()
            assert described["renamed_columns"] == {"user_name": "user", "cart.items": "cart.n"}
            listed = await asyncio.to_thread(_courier, pipeline.settings, "schema", "list")
            assert "field user_name is column user" in listed
            assert "field cart.items is column cart.n" in listed

        last = bucket_start(time.time(), pipeline.settings.bucket_width_secs)
        await pipeline.wait_until(
            lambda: all(reader.manifest(t, last) for t in SCHEMAS), timeout_secs=60
        )
        until = time.time() + 10
        tables = {t: reader.read(t, 0, until) for t in SCHEMAS}
        # The CLI prints what Python's datetime cannot hold (nanoseconds) and decimals exactly.
        clock = _courier(pipeline.settings, "read", "Clock", "--from", "2000-01-01T00:00:00Z",
                         "--format", "jsonl")  # fmt: skip
        assert '"ns": "2026-11-18 11:06:40.000000001Z"' in clock
        assert '"lm": "2026-11-18T11:06:40.123000"' in clock
        pay = _courier(pipeline.settings, "read", "Payment", "--from", "2000-01-01T00:00:00Z",
                       "--format", "jsonl")  # fmt: skip
        assert '"amount": "12.34"' in pay
        with reader.duckdb() as con:
            _check_payments(tables["Payment"], con)
            _check_clock(tables["Clock"], con)
            _check_names(tables["Names"], con)
            _check_choice(tables["Choice"], con)
            _check_renamed(tables["Renamed"], con)
    finally:
        await pipeline.stop()
        await pipeline.transport.close()


def _courier(settings: Settings, *args: str) -> str:
    """Run the ``courier`` CLI against the test's NATS; its standard output."""
    done = subprocess.run(
        [sys.executable, "-m", "courier.cli.main", *args],
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def _send(gw: httpx.AsyncClient, events: list[dict[str, Any]]) -> dict[str, str]:
    """POST ``events``; the rejected ones as ``{id: error}``."""
    r = await gw.post("/v1/events", json={"events": events})
    assert r.status_code == 200, r.text
    return {x["id"]: x["error"] for x in r.json()["rejected"]}


def _rows(table: pa.Table, *columns: str) -> dict[str, tuple[Any, ...]]:
    rows = table.select(["id", *columns]).to_pylist()
    return {row["id"]: tuple(row[c] for c in columns) for row in rows}


def _sql(con: Any, query: str) -> dict[str, tuple[Any, ...]]:
    return {row[0]: tuple(row[1:]) for row in con.execute(query).fetchall()}


def _check_payments(table: pa.Table, con: Any) -> None:
    assert table.schema.field("amount").type == pa.decimal128(12, 2)
    assert table.schema.field("fee").type == pa.decimal128(9, 4)
    assert table.schema.field("splits").type == pa.list_(pa.decimal128(5, 1))
    expected = {
        "pay-1": (Decimal("12.34"), Decimal("1.5000"), None, [Decimal("1.5"), Decimal("2.0")]),
        "pay-2": (Decimal("0.10"), Decimal("99999.9999"), Decimal("0.01"), []),
        "pay-3": (Decimal("-9999999999.99"), Decimal("0.0000"), None, []),
    }
    assert _rows(table, "amount", "fee", "refund", "splits") == expected
    assert _sql(con, "select id, amount, fee, refund, splits from Payment") == expected
    [(total,)] = con.execute("select sum(amount) from Payment").fetchall()
    assert total == Decimal("-9999999987.55")


def _check_clock(table: pa.Table, con: Any) -> None:
    types = {f.name: f.type for f in table.schema}
    assert types["ms"] == pa.timestamp("ms", tz="UTC")
    assert types["ns"] == pa.timestamp("ns", tz="UTC")
    assert types["tm"] == pa.time32("ms") and types["tu"] == pa.time64("us")
    assert types["lm"] == pa.timestamp("ms") and types["ln"] == pa.timestamp("ns")
    assert types["odd"] == pa.string() and types["misplaced"] == pa.string()
    nanos = table.select(["id", "ns", "ln"]).cast(
        pa.schema([("id", pa.string()), ("ns", pa.int64()), ("ln", pa.int64())])
    )
    assert _rows(nanos, "ns", "ln") == {
        "clock-num": (1795000000000000001, 5),
        "clock-text": (1795000000000000001, 5),
    }
    same = ("ms", "us", "day", "tm", "tu", "lm")
    rows = _rows(table, *same)
    assert (
        rows["clock-num"]
        == rows["clock-text"]
        == (
            dt.datetime(2026, 11, 18, 11, 6, 40, tzinfo=UTC),
            dt.datetime(2026, 11, 18, 11, 6, 40, 1, tzinfo=UTC),
            dt.date(2024, 10, 4),
            dt.time(10, 14, 59, 1000),
            dt.time(10, 14, 59, 1),
            dt.datetime(2026, 11, 18, 11, 6, 40, 123000),
        )
    )
    assert _rows(table, "lu", "odd")["clock-text"] == (
        dt.datetime(1969, 12, 31, 23, 59, 59, 999999),
        "x",
    )
    ducks = _sql(con, "select id, epoch_ns(ns), epoch_ns(ln), tm, tu, lm, day from Clock")
    assert (
        ducks["clock-num"]
        == ducks["clock-text"]
        == (
            1795000000000000001,
            5,
            dt.time(10, 14, 59, 1000),
            dt.time(10, 14, 59, 1),
            dt.datetime(2026, 11, 18, 11, 6, 40, 123000),
            dt.date(2024, 10, 4),
        )
    )


def _check_names(table: pa.Table, con: Any) -> None:
    assert table.schema.field("c").type == table.schema.field("a").type  # n1.X
    assert table.schema.field("d").type == table.schema.field("b").type  # n2.X
    assert _rows(table, "a", "c", "d", "e") == {
        "names-1": ({"x": 1}, {"x": 3}, {"y": "d", "inner": {"z": 4}}, {"z": 5})
    }
    assert _sql(con, "select id, a.x, b.inner.z, c.x, d.y, e.z from Names") == {
        "names-1": (1, 2, 3, "d", 5)
    }


def _check_choice(table: pa.Table, con: Any) -> None:
    assert table.schema.field("u").type == pa.struct(
        [("string", pa.string()), ("long", pa.int64())]
    )
    ref = pa.struct([("id", pa.int64())])
    assert table.schema.field("nu").type == pa.struct(
        [("string", pa.string()), ("com.acme.Ref", ref)]
    )
    rows = _rows(table, "u", "nu", "arr", "d")
    assert rows["choice-1"] == (
        {"string": None, "long": 5},
        {"string": None, "com.acme.Ref": {"id": 7}},
        [
            {"int": 1, "string": None, "bytes": None},
            {"int": None, "string": "x", "bytes": None},
            {"int": None, "string": None, "bytes": Decimal("0.25")},
        ],
        {"long": None, "int": dt.date(2022, 1, 8)},
    )
    assert rows["choice-2"][:2] == (
        {"string": "s", "long": None},
        {"string": "t", "com.acme.Ref": None},
    )
    assert rows["choice-2"][3] is None
    # The default of a union is a value of its first branch: 7 as a long.
    assert rows["choice-3"] == ({"string": None, "long": -1}, None, [], {"long": 7, "int": None})
    ducks = _sql(
        con,
        'select id, u.long, u.string, nu."com.acme.Ref".id, len(arr), d.long from Choice',
    )
    assert ducks == {
        "choice-1": (5, None, 7, 3, None),
        "choice-2": (None, "s", None, 0, None),
        "choice-3": (-1, None, None, 0, 7),
    }


def _check_renamed(table: pa.Table, con: Any) -> None:
    # A renamed field keeps its first column name, so every bucket lines up.
    assert [f for f in table.column_names if f not in _ENVELOPE] == ["user", "cart"]
    assert table.schema.field("cart").type == pa.struct([("n", pa.int32())])
    assert _rows(table, "user", "cart") == {
        "ren-1": ("ann", {"n": 1}),
        "ren-2": ("bob", {"n": 2}),
    }
    assert _sql(con, "select id, user, cart.n from Renamed") == {
        "ren-1": ("ann", 1),
        "ren-2": ("bob", 2),
    }


_ENVELOPE = {
    "id",
    "time",
    "sent_at",
    "received_at",
    "published_at",
    "received_dc",
    "schema_version",
}
