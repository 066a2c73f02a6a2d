"""Event types, their schema versions and settings, stored in a KeyValue bucket.

Files are the declarative source (``<Type>.avsc`` + optional ``<Type>.toml``);
:meth:`Registry.apply` makes the KV match them. Each type is one KV key
``type.<Name>`` whose value is JSON holding every version, so a type changes
atomically with one compare-and-set. Apply protocol:

1. Compile every definition and read every current record; nothing is written
   if any definition is invalid or (without ``force``) incompatible.
2. For each type, write the new record with ``create`` (new type) or
   ``update(last_revision)``. If another applier won the race, re-read that
   type and redo step 1 for it alone (a few times). A crash between writes
   leaves some types applied; re-running apply finishes the job (idempotent).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from courier.errors import ConcurrentUpdateError, IncompatibleSchemaError, SchemaError
from courier.model import INVALID_TYPE, iso_utc
from courier.schema.avro import event_type_name, parse_schema
from courier.schema.codec import CompiledType, TypeSettings, compile_type, invalid_type
from courier.schema.compat import assign_columns, check_backward_compatible
from courier.schema.compat import renamed_columns as renamed_in
from courier.transport.kv import KeyValue

log = logging.getLogger("courier.schema")

KEY_PREFIX = "type."
FORMAT_VERSION = 1
_SETTING_KEYS = frozenset({"owner", "tier", "finance", "grace_secs"})
_CAS_ATTEMPTS = 5


@dataclass(frozen=True)
class TypeDefinition:
    name: str
    avro: dict[str, Any]
    settings: TypeSettings


@dataclass(frozen=True)
class SchemaVersion:
    version: int
    avro: dict[str, Any]
    fingerprint: str
    registered_at: float


@dataclass(frozen=True)
class TypeRecord:
    name: str
    settings: TypeSettings
    versions: tuple[SchemaVersion, ...]
    enabled_at: float

    @property
    def latest(self) -> SchemaVersion:
        return self.versions[-1]


@dataclass(frozen=True)
class ApplyResult:
    name: str
    action: Literal["created", "new-version", "settings-updated", "unchanged"]
    version: int


def fingerprint(avro: dict[str, Any]) -> str:
    """SHA-256 of the schema's canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(avro, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def settings_from_mapping(raw: dict[str, Any], where: str) -> TypeSettings:
    """TypeSettings from a TOML/JSON mapping; errors name ``where``."""
    unknown = set(raw) - _SETTING_KEYS
    if unknown:
        raise SchemaError(
            f"{where}: unknown setting(s) {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(_SETTING_KEYS))})"
        )
    try:
        return TypeSettings(**raw)
    except SchemaError as exc:
        raise SchemaError(f"{where}: {exc}") from exc


def load_definitions(directory: Path) -> list[TypeDefinition]:
    """Read ``<Type>.avsc`` (+ optional ``<Type>.toml``) files, sorted by type name."""
    if not directory.is_dir():
        raise SchemaError(f"{directory}: schema directory does not exist")
    definitions = []
    stems = {p.stem for p in directory.glob("*.avsc")}
    for toml_path in sorted(directory.glob("*.toml")):
        if toml_path.stem not in stems:
            raise SchemaError(f"{toml_path}: settings file without a {toml_path.stem}.avsc")
    for path in sorted(directory.glob("*.avsc")):
        try:
            avro = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SchemaError(f"{path}: not a readable Avro JSON file: {exc}") from exc
        name = event_type_name(avro)
        if name != path.stem:
            raise SchemaError(
                f"{path}: record name {name!r} (without namespace) must equal the file name "
                f"{path.stem!r}"
            )
        settings = TypeSettings()
        toml_path = path.with_suffix(".toml")
        if toml_path.exists():
            try:
                raw = tomllib.loads(toml_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise SchemaError(f"{toml_path}: not a readable TOML file: {exc}") from exc
            settings = settings_from_mapping(raw, str(toml_path))
        try:
            compile_type(path.stem, avro, 1, settings)
        except SchemaError as exc:
            raise SchemaError(f"{path}: {exc}") from exc
        definitions.append(TypeDefinition(path.stem, avro, settings))
    return definitions


def compile_record(record: TypeRecord) -> CompiledType:
    """The latest version of ``record``, with renamed fields keeping their columns."""
    latest = record.latest
    return compile_type(
        record.name,
        latest.avro,
        latest.version,
        record.settings,
        history=[v.avro for v in record.versions[:-1]],
    )


def renamed_columns(record: TypeRecord) -> dict[str, str]:
    """Fields of the latest version whose bucket column keeps an earlier name:
    ``{"field.path": "column.path"}`` (empty when nothing was renamed)."""
    if len(record.versions) == 1:
        return {}
    return renamed_in(assign_columns([parse_schema(v.avro, builtin=True) for v in record.versions]))


def record_to_json(record: TypeRecord) -> dict[str, Any]:
    """The JSON form served by ``GET /v1/schemas``."""
    return {
        "name": record.name,
        "settings": asdict(record.settings),
        "enabled_at": iso_utc(record.enabled_at),
        "latest_version": record.latest.version,
        "renamed_columns": renamed_columns(record),
        "versions": [
            {
                "version": v.version,
                "fingerprint": v.fingerprint,
                "registered_at": iso_utc(v.registered_at),
                "schema": v.avro,
            }
            for v in record.versions
        ],
    }


def _encode(record: TypeRecord) -> bytes:
    doc = {
        "format": FORMAT_VERSION,
        "name": record.name,
        "settings": asdict(record.settings),
        "enabled_at": record.enabled_at,
        "versions": [asdict(v) for v in record.versions],
    }
    return json.dumps(doc, sort_keys=True).encode()


def _decode(key: str, value: bytes) -> TypeRecord:
    try:
        doc = json.loads(value)
        if doc.get("format") != FORMAT_VERSION:
            raise ValueError(f"unknown format {doc.get('format')!r}")
        return TypeRecord(
            name=doc["name"],
            settings=settings_from_mapping(doc["settings"], f"KV key {key}"),
            versions=tuple(SchemaVersion(**v) for v in doc["versions"]),
            enabled_at=float(doc["enabled_at"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SchemaError(f"KV key {key}: unreadable type record: {exc}") from exc


class Registry:
    """Reads and applies event type definitions in a :class:`KeyValue` bucket."""

    def __init__(self, kv: KeyValue, *, clock: Callable[[], float] = time.time) -> None:
        self._kv = kv
        self._clock = clock
        self._cache: dict[tuple[str, int, str, TypeSettings], CompiledType] = {}
        self._uncompilable: set[tuple[str, int, str, TypeSettings]] = set()

    async def apply(
        self, definitions: Sequence[TypeDefinition], *, force: bool = False
    ) -> list[ApplyResult]:
        """Make the registry match ``definitions`` (idempotent). Raises
        :class:`IncompatibleSchemaError` listing every problem, before writing
        anything, unless ``force``."""
        names = [d.name for d in definitions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SchemaError(f"type(s) defined more than once: {', '.join(dupes)}")
        for d in definitions:  # step 1
            compile_type(d.name, d.avro, 1, d.settings)
        plans = [await self._plan(d, force) for d in definitions]
        problems = [p for plan in plans for p in plan[2]]
        if problems:
            raise IncompatibleSchemaError(
                "incompatible schema change(s), nothing applied (use force to override):\n  "
                + "\n  ".join(problems)
            )
        results = []
        for d, plan in zip(definitions, plans, strict=True):  # step 2
            for attempt in range(_CAS_ATTEMPTS):
                if attempt:
                    plan = await self._plan(d, force)
                    if plan[2]:
                        raise IncompatibleSchemaError(
                            f"type {d.name} changed concurrently and is now incompatible:\n  "
                            + "\n  ".join(plan[2])
                        )
                try:
                    results.append(await self._write(d.name, *plan[:2]))
                    break
                except ConcurrentUpdateError:
                    continue
            else:
                raise ConcurrentUpdateError(
                    f"type {d.name}: changed concurrently {_CAS_ATTEMPTS} times; apply again"
                )
        return results

    async def _plan(
        self, d: TypeDefinition, force: bool
    ) -> tuple[tuple[TypeRecord | None, int], TypeRecord | None, builtins.list[str]]:
        """(current record and revision, record to write or None, problems)."""
        entry = await self._kv.get(KEY_PREFIX + d.name)
        current = _decode(entry.key, entry.value) if entry else None
        revision = entry.revision if entry else 0
        now = self._clock()
        fp = fingerprint(d.avro)
        if current is None:
            new = TypeRecord(d.name, d.settings, (SchemaVersion(1, d.avro, fp, now),), now)
            return (current, revision), new, []
        if current.latest.fingerprint == fp:
            if current.settings == d.settings:
                return (current, revision), None, []
            return (
                (current, revision),
                TypeRecord(d.name, d.settings, current.versions, current.enabled_at),
                [],
            )
        problems = [] if force else check_backward_compatible(current.latest.avro, d.avro)
        version = SchemaVersion(current.latest.version + 1, d.avro, fp, now)
        new = TypeRecord(d.name, d.settings, (*current.versions, version), current.enabled_at)
        if not problems:
            compile_record(new)  # renamed fields must keep distinct columns
        return (current, revision), new, problems

    async def _write(
        self, name: str, current: tuple[TypeRecord | None, int], new: TypeRecord | None
    ) -> ApplyResult:
        old, revision = current
        if new is None:
            assert old is not None
            return ApplyResult(name, "unchanged", old.latest.version)
        if old is None:
            await self._kv.create(KEY_PREFIX + name, _encode(new))
            return ApplyResult(name, "created", new.latest.version)
        await self._kv.update(KEY_PREFIX + name, _encode(new), revision)
        if new.latest.version == old.latest.version:
            return ApplyResult(name, "settings-updated", new.latest.version)
        return ApplyResult(name, "new-version", new.latest.version)

    async def get(self, name: str) -> TypeRecord | None:
        """The record of one type, or None when it is not registered."""
        entry = await self._kv.get(KEY_PREFIX + name)
        return _decode(entry.key, entry.value) if entry else None

    async def list(self) -> builtins.list[TypeRecord]:
        """Every registered type, sorted by name."""
        records = []
        for key in sorted(await self._kv.keys()):
            if key.startswith(KEY_PREFIX):
                record = await self.get(key[len(KEY_PREFIX) :])
                if record is not None:  # deleted between keys() and get()
                    records.append(record)
        return sorted(records, key=lambda r: r.name)

    async def compiled(self) -> dict[str, CompiledType]:
        """The latest version of every type, plus the built-in ``_invalid`` type.

        A stored type that no longer compiles (a schema registered before this
        Courier reserved one of its field names, such as ``received_dc``) is left
        out, with one error in the log per version: the other types keep working,
        and that type's events are refused as unknown (nothing is acknowledged)
        until a new version of its schema is applied."""
        out: dict[str, CompiledType] = {}
        for record in await self.list():
            latest = record.latest
            key = (record.name, latest.version, latest.fingerprint, record.settings)
            compiled = self._cache.get(key)
            if compiled is None:
                if key in self._uncompilable:
                    continue
                try:
                    compiled = self._cache[key] = compile_record(record)
                except SchemaError as exc:
                    self._uncompilable.add(key)
                    log.error(
                        "type %s v%d no longer compiles and is left out (its events are "
                        "refused as unknown until a new version is applied): %s",
                        record.name,
                        latest.version,
                        exc,
                    )
                    continue
            out[record.name] = compiled
        out[INVALID_TYPE] = invalid_type()
        return out
