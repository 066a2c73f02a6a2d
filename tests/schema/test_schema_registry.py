"""The registry: files -> KV, versions, settings, compiled types."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import courier.schema.avro
from courier.errors import IncompatibleSchemaError, SchemaError
from courier.examples import SCHEMAS_DIR
from courier.model import INVALID_TYPE
from courier.schema import (
    Registry,
    TypeDefinition,
    TypeSettings,
    load_definitions,
    record_to_json,
)
from courier.transport.kv import KVEntry, MemoryKeyValue


def avro(*extra: dict[str, Any]) -> dict[str, Any]:
    fields = [{"name": "track_id", "type": "string"}, *extra]
    return {"type": "record", "name": "PlaySong", "fields": fields}


def define(schema: dict[str, Any], **settings: Any) -> TypeDefinition:
    return TypeDefinition(schema["name"], schema, TypeSettings(**settings))


@pytest.fixture
def registry() -> Registry:
    return Registry(MemoryKeyValue(), clock=lambda: 1_764_151_200.0)


async def test_applying_a_new_type_creates_version_1(registry: Registry) -> None:
    [result] = await registry.apply([define(avro(), owner="me")])
    assert (result.name, result.action, result.version) == ("PlaySong", "created", 1)
    record = await registry.get("PlaySong")
    assert record is not None
    assert record.settings.owner == "me"
    assert [v.version for v in record.versions] == [1]
    assert record.latest.fingerprint.startswith("sha256:")


async def test_apply_is_idempotent(registry: Registry) -> None:
    await registry.apply([define(avro())])
    [again] = await registry.apply([define(avro())])
    assert (again.action, again.version) == ("unchanged", 1)


async def test_a_compatible_change_adds_a_version(registry: Registry) -> None:
    await registry.apply([define(avro())])
    new = avro({"name": "shuffle", "type": "boolean", "default": False})
    [result] = await registry.apply([define(new)])
    assert (result.action, result.version) == ("new-version", 2)
    [result] = await registry.apply([define(avro({"name": "n", "type": "int", "default": 0}))])
    assert result.version == 3
    record = await registry.get("PlaySong")
    assert record is not None and [v.version for v in record.versions] == [1, 2, 3]


async def test_an_incompatible_change_is_refused_and_nothing_is_written(registry: Registry) -> None:
    await registry.apply([define(avro())])
    search = {"type": "record", "name": "Search", "fields": [{"name": "q", "type": "string"}]}
    bad = avro({"name": "ms_played", "type": "long"})
    with pytest.raises(
        IncompatibleSchemaError, match=r"PlaySong\.ms_played: added field has no default"
    ):
        await registry.apply([define(search), define(bad)])
    assert await registry.get("Search") is None
    record = await registry.get("PlaySong")
    assert record is not None and len(record.versions) == 1


async def test_force_accepts_an_incompatible_change(registry: Registry) -> None:
    await registry.apply([define(avro())])
    [result] = await registry.apply([define(avro({"name": "x", "type": "long"}))], force=True)
    assert (result.action, result.version) == ("new-version", 2)


async def test_a_settings_only_change_keeps_the_version(registry: Registry) -> None:
    await registry.apply([define(avro(), tier="normal")])
    [result] = await registry.apply([define(avro(), tier="high", finance=True)])
    assert (result.action, result.version) == ("settings-updated", 1)
    record = await registry.get("PlaySong")
    assert record is not None
    assert record.settings == TypeSettings(tier="high", finance=True)


async def test_an_invalid_definition_is_refused_before_anything_is_written(
    registry: Registry,
) -> None:
    broken = {
        "type": "record",
        "name": "Broken",
        "fields": [{"name": "u", "type": ["int", ["null", "string"]]}],
    }
    with pytest.raises(SchemaError, match=r"Broken\.u: a union may not directly contain"):
        await registry.apply([define(avro()), define(broken)])
    assert await registry.list() == []


async def test_list_is_sorted_and_compiled_includes_the_invalid_type(registry: Registry) -> None:
    await registry.apply(load_definitions(SCHEMAS_DIR))
    assert [r.name for r in await registry.list()] == ["AdImpression", "PlaySong", "Search"]
    compiled = await registry.compiled()
    assert sorted(compiled) == ["AdImpression", "PlaySong", "Search", INVALID_TYPE]
    assert compiled["AdImpression"].settings.finance is True
    assert (await registry.compiled())["PlaySong"] is compiled["PlaySong"]


async def test_compiled_follows_the_latest_version_and_settings(registry: Registry) -> None:
    await registry.apply([define(avro())])
    first = (await registry.compiled())["PlaySong"]
    await registry.apply([define(avro({"name": "n", "type": "int", "default": 0}), owner="x")])
    second = (await registry.compiled())["PlaySong"]
    assert (first.version, second.version, second.settings.owner) == (1, 2, "x")


async def test_record_to_json_describes_every_version(registry: Registry) -> None:
    await registry.apply([define(avro(), owner="me")])
    record = await registry.get("PlaySong")
    assert record is not None
    doc = record_to_json(record)
    json.dumps(doc)
    assert doc["latest_version"] == 1
    assert doc["settings"]["owner"] == "me"
    assert doc["enabled_at"] == "2025-11-26T10:00:00.000Z"
    assert doc["versions"][0]["schema"] == avro()


class _YieldingKeyValue(MemoryKeyValue):
    """Yields to the event loop on every read so concurrent appliers interleave."""

    async def get(self, key: str) -> KVEntry | None:
        await asyncio.sleep(0)
        return await super().get(key)


async def test_concurrent_appliers_do_not_clobber_each_other() -> None:
    kv = _YieldingKeyValue()
    await Registry(kv).apply([define(avro())])
    with_a = avro({"name": "a", "type": "int", "default": 0})
    with_b = avro({"name": "b", "type": "int", "default": 0})
    results = await asyncio.gather(
        Registry(kv).apply([define(with_a)]), Registry(kv).apply([define(with_b)])
    )
    assert sorted(r[0].version for r in results) == [2, 3]
    record = await Registry(kv).get("PlaySong")
    assert record is not None and [v.version for v in record.versions] == [1, 2, 3]


# --- load_definitions ---------------------------------------------------------


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_load_definitions_reads_schemas_and_settings(tmp_path: Path) -> None:
    write(tmp_path, "PlaySong.avsc", json.dumps(avro()))
    write(tmp_path, "PlaySong.toml", 'owner = "me"\ntier = "high"\ngrace_secs = 5\n')
    [d] = load_definitions(tmp_path)
    assert d.name == "PlaySong"
    assert d.settings == TypeSettings(owner="me", tier="high", grace_secs=5)


def test_a_schema_without_settings_gets_default_settings(tmp_path: Path) -> None:
    write(tmp_path, "PlaySong.avsc", json.dumps(avro()))
    assert load_definitions(tmp_path)[0].settings == TypeSettings()


@pytest.mark.parametrize(
    ("files", "bad_file", "message"),
    [
        ({"PlaySong.avsc": "{not json"}, "PlaySong.avsc", "not a readable Avro JSON"),
        ({"Search.avsc": json.dumps(avro())}, "Search.avsc", "must equal the file name"),
        (
            {"PlaySong.avsc": json.dumps(avro({"name": "time", "type": "string"}))},
            "PlaySong.avsc",
            "reserved",
        ),
        (
            {"PlaySong.avsc": json.dumps(avro()), "PlaySong.toml": "tier = 'urgent'"},
            "PlaySong.toml",
            "tier must be one of",
        ),
        (
            {"PlaySong.avsc": json.dumps(avro()), "PlaySong.toml": "colour = 'red'"},
            "PlaySong.toml",
            "unknown setting",
        ),
        (
            {"PlaySong.avsc": json.dumps(avro()), "PlaySong.toml": "owner = "},
            "PlaySong.toml",
            "not a readable TOML",
        ),
        ({"Orphan.toml": "owner = 'x'"}, "Orphan.toml", "without a Orphan.avsc"),
    ],
)
def test_load_definitions_errors_name_the_file(
    tmp_path: Path, files: dict[str, str], bad_file: str, message: str
) -> None:
    for name, text in files.items():
        write(tmp_path, name, text)
    with pytest.raises(SchemaError) as info:
        load_definitions(tmp_path)
    assert str(tmp_path / bad_file) in str(info.value)
    assert message in str(info.value)


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="does not exist"):
        load_definitions(tmp_path / "nope")


async def test_a_rename_keeps_the_column_and_is_listed(registry: Registry) -> None:
    await registry.apply([define(avro({"name": "user", "type": "string"}))])
    renamed = avro({"name": "user_name", "type": "string", "aliases": ["user"]})
    [result] = await registry.apply([define(renamed)])
    assert (result.action, result.version) == ("new-version", 2)
    record = await registry.get("PlaySong")
    assert record is not None
    assert record_to_json(record)["renamed_columns"] == {"user_name": "user"}
    compiled = (await registry.compiled())["PlaySong"]
    assert "user" in compiled.arrow_schema.names and "user_name" not in compiled.arrow_schema.names


async def test_a_rename_that_would_merge_two_columns_is_refused_before_writing(
    registry: Registry,
) -> None:
    await registry.apply([define(avro({"name": "user", "type": "string"}))])
    clash = avro(
        {"name": "user_name", "type": "string", "aliases": ["user"]},
        {"name": "user", "type": "string", "default": ""},
    )
    with pytest.raises(SchemaError, match="would hold both field"):
        await registry.apply([define(clash)])
    record = await registry.get("PlaySong")
    assert record is not None and record.latest.version == 1


async def test_a_namespaced_record_registers_under_its_short_name(
    registry: Registry, tmp_path: Path
) -> None:
    schema = {**avro(), "name": "com.acme.PlaySong"}
    (tmp_path / "PlaySong.avsc").write_text(json.dumps(schema))
    [definition] = load_definitions(tmp_path)
    [result] = await registry.apply([definition])
    assert (result.name, result.version) == ("PlaySong", 1)


async def test_a_stored_type_that_no_longer_compiles_is_left_out_not_every_type(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A schema registered before a field name became reserved (``received_dc`` did in
    this version) must not stop the registry serving every other type."""
    kv = MemoryKeyValue()
    old = Registry(kv)
    await old.apply(load_definitions(SCHEMAS_DIR))
    await old.apply([define(avro({"name": "legacy_dc", "type": "string", "default": ""}))])
    monkeypatch.setattr(
        "courier.schema.avro.RESERVED_FIELDS",
        frozenset({*courier.schema.avro.RESERVED_FIELDS, "legacy_dc"}),
    )
    upgraded = Registry(kv)
    compiled = await upgraded.compiled()
    assert sorted(compiled) == ["AdImpression", "Search", INVALID_TYPE]
    assert "type PlaySong v2 no longer compiles" in caplog.text
    caplog.clear()
    await upgraded.compiled()
    assert "no longer compiles" not in caplog.text  # logged once per version
