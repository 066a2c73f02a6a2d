"""Realistic event batches, built cheaply so the load generator leaves CPU to Courier.

Payloads are drawn from a pool built once per type (sizes jittered around the
target event size by padding a string field). Request bodies are pre-encoded:
a few templates per type are rendered at start-up, split at a placeholder for
the end of each id and its time, and each request costs one ``bytes.join`` and
one numpy copy for its ledger keys, never a per-event Python loop. Ids are
UUIDv7 strings: a random per-process prefix (48-bit start time, version,
variant and random bits) followed by a 48-bit counter, so they are unique
across processes and runs; a batch's ids share a block number (the counter's
low 32 bits, after 16 bits of index), which is what lets them live in a template.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The example types (src/courier/examples/schemas) the generator knows how to fill.
BASE_TYPES = ("PlaySong", "Search", "AdImpression")
_WORDS = [
    "rock",
    "jazz",
    "indie",
    "live",
    "remaster",
    "acoustic",
    "chill",
    "focus",
    "workout",
    "party",
    "sleep",
    "summer",
    "classic",
    "vinyl",
    "deluxe",
    "edit",
    "remix",
    "radio",
]
_COUNTRIES = ("SE", "US", "DE", "BR", "JP", "GB", "FR", "IN", None)
_DEVICES = ("PHONE", "DESKTOP", "WEB", "TV")


def type_names(count: int) -> list[str]:
    """``count`` type names: the three examples, then clones ``PlaySong2``, ``Search2``, …"""
    names = []
    for i in range(count):
        base = BASE_TYPES[i % len(BASE_TYPES)]
        n = i // len(BASE_TYPES)
        names.append(base if n == 0 else f"{base}{n + 1}")
    return names


def base_type(name: str) -> str:
    return name.rstrip("0123456789")


def write_clone_schemas(examples_dir: Path, out_dir: Path, count: int) -> list[str]:
    """Write ``<Type>.avsc``/``.toml`` for ``type_names(count)`` into ``out_dir``.

    Clones keep the example's fields under a new record name, so more than
    three types can be registered with ``courier schema apply out_dir``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    names = type_names(count)
    for name in names:
        base = base_type(name)
        avro = json.loads((examples_dir / f"{base}.avsc").read_text())
        avro["name"] = name
        (out_dir / f"{name}.avsc").write_text(json.dumps(avro))
        toml = examples_dir / f"{base}.toml"
        if toml.exists():
            (out_dir / f"{name}.toml").write_text(toml.read_text())
    return names


def type_weights(count: int, skew: float) -> list[float]:
    """Zipf-like share of each type: weight ``1 / (rank + 1) ** skew`` (0 = uniform)."""
    raw = [1.0 / (i + 1) ** skew for i in range(count)]
    total = sum(raw)
    return [w / total for w in raw]


def _payload(base: str, rng: random.Random, pad: int) -> dict[str, object]:
    filler = " ".join(rng.choice(_WORDS) for _ in range(64))[: max(0, pad)]
    if base == "PlaySong":
        country = rng.choice(_COUNTRIES)
        return {
            "track_id": f"spotify:track:{rng.getrandbits(64):016x}{filler}",
            "ms_played": rng.randrange(300_000),
            "context": {"device": rng.choice(_DEVICES), "country": country},
            "tags": rng.sample(_WORDS, 2),
            "shuffle": rng.random() < 0.3,
        }
    if base == "Search":
        clicked = rng.randrange(10) if rng.random() < 0.6 else None
        return {
            "query": f"{rng.choice(_WORDS)} {rng.choice(_WORDS)}{filler}",
            "results": rng.randrange(50),
            "filters": {"market": rng.choice(("SE", "US", "DE")), "kind": "track"},
            "clicked_position": clicked,
        }
    if base == "AdImpression":
        shown = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=rng.randrange(60))
        return {
            "ad_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "campaign": f"campaign-{rng.randrange(500)}{filler}",
            "cost_micros": rng.randrange(5_000),
            "shown_at": shown.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "day": shown.strftime("%Y-%m-%d"),
            "revenue": round(rng.random() * 0.01, 6),
        }
    raise ValueError(f"the load generator has no payload for type {base!r}")


_ID_PLACEHOLDER = "00000000-0000-7000-8000-000000000000"
_TIME_PLACEHOLDER = "2026-01-01T00:00:00.000Z"


def _event_json(name: str, payload: dict[str, object]) -> bytes:
    doc = {"type": name, "id": _ID_PLACEHOLDER, "time": _TIME_PLACEHOLDER, "data": payload}
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True)
class PayloadPool:
    """Pre-rendered ``"data"`` values of one type, each making an event of about the target size."""

    name: str
    #: The bytes before the id: ``{"type":"<name>","id":"``.
    head: bytes
    datas: list[bytes]

    @classmethod
    def build(cls, name: str, event_bytes: int, rng: random.Random, size: int = 256) -> PayloadPool:
        base = base_type(name)
        datas = []
        for _ in range(size):
            target = max(0, int(event_bytes * rng.uniform(0.8, 1.2)))
            bare = _payload(base, random.Random(rng.getrandbits(32)), 0)
            pad = target - len(_event_json(name, bare))
            full = _payload(base, random.Random(rng.getrandbits(32)), pad)
            datas.append(json.dumps(full, separators=(",", ":")).encode())
        return cls(name, b'{"type":"' + name.encode() + b'","id":"', datas)


#: Events per batch block at most: the upper 16 bits of a block id's counter are its
#: index in the batch, the lower 32 bits the block number (at least 2**31, so block ids
#: never meet the ids :meth:`IdSource.take` counts up from 0).
BLOCK_IDS = 1 << 16
_FIRST_BLOCK = 1 << 31


class IdSource:
    """Unique UUIDv7 ids from one process: fixed random prefix + 48-bit counter."""

    def __init__(self) -> None:
        ms = time.time_ns() // 1_000_000
        rand = int.from_bytes(os.urandom(8), "big")
        value = (ms & ((1 << 48) - 1)) << 80
        value |= 0x7 << 76
        value |= (rand & 0xFFF) << 64
        value |= 0b10 << 62
        value |= ((rand >> 12) & 0x3FFF) << 48
        text = str(uuid.UUID(int=value))
        self.prefix = text[:24]
        self._prefix_bytes = uuid.UUID(int=value).bytes[:10]
        self._next = 0
        self._next_block = _FIRST_BLOCK

    def take(self, count: int) -> tuple[list[str], bytes]:
        """``count`` new ids and their 16-byte ledger keys, concatenated."""
        start, self._next = self._next, self._next + count
        if self._next > _FIRST_BLOCK:
            raise ValueError("this id source has no counters left for take()")
        ids = [f"{self.prefix}{n:012x}" for n in range(start, start + count)]
        pb = self._prefix_bytes
        keys = b"".join(pb + n.to_bytes(6, "big") for n in range(start, start + count))
        return ids, keys

    def block(self) -> int:
        """A fresh block of :data:`BLOCK_IDS` ids; returns its number. Id ``index`` of
        the block is ``prefix + f"{index:04x}{block:08x}"``: the block number ends the id,
        so a body template holds it next to the event's time (one placeholder for both)."""
        number, self._next_block = self._next_block, self._next_block + 1
        if number >= 1 << 32:
            raise ValueError("this id source has no blocks left")
        return number

    def key_template(self, count: int) -> np.ndarray:
        """Ledger keys of indexes ``0..count-1`` of a block, with the block number zeroed
        (bytes 12-15): fill those in per batch."""
        if count > BLOCK_IDS:
            raise ValueError(f"a batch holds at most {BLOCK_IDS} events, not {count}")
        keys = np.zeros((count, 16), dtype=np.uint8)
        keys[:, :10] = np.frombuffer(self._prefix_bytes, dtype=np.uint8)
        index = np.arange(count, dtype=">u2").view(np.uint8).reshape(count, 2)
        keys[:, 10:12] = index
        return keys


@dataclass(frozen=True, slots=True)
class Batch:
    """One request: its JSON body, how many events, and their ledger keys (16 bytes each)."""

    event_type: str
    body: bytes
    count: int
    keys: bytes

    @property
    def ids(self) -> list[str]:
        """The events' ids (only for callers that need the text; derived from the keys)."""
        return [str(uuid.UUID(bytes=self.keys[i : i + 16])) for i in range(0, len(self.keys), 16)]


#: The placeholder in a body template: the end of an event's id (8 hex digits of the
#: batch's block) and its time, which follow each other in the JSON.
_TIME_TEXT = b'","time":"'
_MARK = b"@" * 8 + _TIME_TEXT + b"~" * len(_TIME_PLACEHOLDER)
_TEMPLATES_PER_TYPE = 32


@dataclass(frozen=True, slots=True)
class _Template:
    #: The events of the body, split at every placeholder: ``value.join(parts)``.
    parts: list[bytes]
    keys: np.ndarray


def _now_text() -> str:
    t = dt.datetime.now(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class BatchFactory:
    """Builds request bodies of ``batch_events`` events of one type, chosen by weight."""

    def __init__(
        self,
        *,
        types: int = 3,
        skew: float = 0.0,
        event_bytes: int = 360,
        batch_events: int = 100,
        seed: int | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.names = type_names(types)
        self.weights = type_weights(types, skew)
        self.batch_events = batch_events
        self.pools = {n: PayloadPool.build(n, event_bytes, self.rng) for n in self.names}
        self.ids = IdSource()
        keys = self.ids.key_template(batch_events)
        self.templates = {
            n: [self._template(self.pools[n], keys) for _ in range(_TEMPLATES_PER_TYPE)]
            for n in self.names
        }

    def _template(self, pool: PayloadPool, keys: np.ndarray) -> _Template:
        prefix = self.ids.prefix.encode()
        datas = self.rng.choices(pool.datas, k=self.batch_events)
        events = b",".join(
            pool.head + prefix + b"%04x" % i + _MARK + b'","data":' + d + b"}"
            for i, d in enumerate(datas)
        )
        parts = (events + b"]}").split(_MARK)
        if len(parts) != self.batch_events + 1:
            raise ValueError("a payload holds the template placeholder; cannot template it")
        return _Template(parts, keys)

    def next(self) -> Batch:
        name = self.rng.choices(self.names, self.weights)[0]
        template = self.rng.choice(self.templates[name])
        block = self.ids.block()
        keys = template.keys.copy()
        keys[:, 12:16] = np.frombuffer(block.to_bytes(4, "big"), dtype=np.uint8)
        when = _now_text().encode()
        events = (b"%08x" % block + _TIME_TEXT + when).join(template.parts)
        body = b'{"sent_at":"' + when + b'","events":[' + events
        return Batch(name, body, self.batch_events, keys.tobytes())
