"""Audit counts in the ``courier_audit`` KV bucket (JSON, ``format_version`` 1).

Two kinds of keys, both per event type, both written only with
compare-and-set so concurrent writers never lose each other's counts:

``stream.<Type>`` — what the auditor counted in the type's stream::

    {"format_version": 1, "last_seq": 812, "spill_secs": 10.0,
     "buckets": {"1764151200": [messages, events, head_events], ...}}

  ``last_seq`` and the counts change together in one write, which is what
  makes counting exactly-once (see :mod:`courier.audit.counter`).
  ``head_events`` are the events stamped in the first ``spill_secs`` of the
  bucket: the only ones a gateway may have received in the previous bucket.

``gateway.<Type>`` — what gateways acknowledged (or rejected), bucketed by
receive time::

    {"format_version": 1, "buckets": {"1764151200": [accepted, rejected], ...},
     "writers": {"<gateway id>": [last_serial, written_at], ...}}

  Each gateway numbers its flushes; a flush whose serial is already recorded
  for that gateway was applied before (its outcome was unknown to the
  gateway) and is not added twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from courier.errors import ConcurrentUpdateError, KeyExistsError
from courier.transport.kv import KeyValue

FORMAT_VERSION = 1
STREAM_PREFIX = "stream."
GATEWAY_PREFIX = "gateway."
_CAS_ATTEMPTS = 8
#: A gateway's dedup entry is dropped once it has not written for this long.
_WRITER_FORGET_SECS = 7 * 86_400


@dataclass
class StreamCounts:
    """Per-bucket counts of one type's stream, up to and including ``last_seq``."""

    last_seq: int = 0
    spill_secs: float = 0.0
    #: bucket start -> [messages, events, head_events]
    buckets: dict[int, list[int]] = field(default_factory=dict)

    def add(self, bucket: int, events: int, head: bool) -> None:
        row = self.buckets.setdefault(bucket, [0, 0, 0])
        row[0] += 1
        row[1] += events
        if head:
            row[2] += events

    def events(self, bucket: int) -> int:
        row = self.buckets.get(bucket)
        return row[1] if row else 0

    def head_events(self, bucket: int) -> int:
        row = self.buckets.get(bucket)
        return row[2] if row else 0

    def prune(self, before: int) -> None:
        for start in [s for s in self.buckets if s < before]:
            del self.buckets[start]

    def encode(self) -> bytes:
        doc = {
            "format_version": FORMAT_VERSION,
            "last_seq": self.last_seq,
            "spill_secs": self.spill_secs,
            "buckets": {str(k): v for k, v in sorted(self.buckets.items())},
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> StreamCounts:
        doc = json.loads(raw)
        _check_version(doc)
        return cls(
            int(doc["last_seq"]),
            float(doc.get("spill_secs", 0.0)),
            {int(k): [int(x) for x in v] for k, v in doc["buckets"].items()},
        )


@dataclass
class GatewayCounts:
    """Per-bucket accepted and rejected counts of one type, summed over gateways."""

    #: bucket start -> [accepted, rejected]
    buckets: dict[int, list[int]] = field(default_factory=dict)
    #: gateway id -> [last applied flush serial, written_at]
    writers: dict[str, list[float]] = field(default_factory=dict)

    def accepted(self, bucket: int) -> int:
        row = self.buckets.get(bucket)
        return row[0] if row else 0

    def rejected(self, bucket: int) -> int:
        row = self.buckets.get(bucket)
        return row[1] if row else 0

    def encode(self) -> bytes:
        doc = {
            "format_version": FORMAT_VERSION,
            "buckets": {str(k): v for k, v in sorted(self.buckets.items())},
            "writers": self.writers,
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> GatewayCounts:
        doc = json.loads(raw)
        _check_version(doc)
        return cls(
            {int(k): [int(x) for x in v] for k, v in doc["buckets"].items()},
            {k: [float(x) for x in v] for k, v in doc.get("writers", {}).items()},
        )


def _check_version(doc: dict[str, object]) -> None:
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"audit record has format_version {doc.get('format_version')!r}; this Courier "
            f"reads only version {FORMAT_VERSION}"
        )


class AuditStore:
    """Typed access to the audit KV bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def stream_counts(self, event_type: str) -> tuple[StreamCounts, int | None]:
        """The type's stream counts and their revision (None: never written)."""
        e = await self.kv.get(STREAM_PREFIX + event_type)
        if e is None:
            return StreamCounts(), None
        return StreamCounts.decode(e.value), e.revision

    async def save_stream_counts(
        self, event_type: str, counts: StreamCounts, revision: int | None
    ) -> int:
        """Write if nobody else wrote since ``revision``; else ConcurrentUpdateError."""
        key = STREAM_PREFIX + event_type
        if revision is None:
            try:
                return await self.kv.create(key, counts.encode())
            except KeyExistsError as exc:
                raise ConcurrentUpdateError(f"audit counts of {event_type} appeared") from exc
        return await self.kv.update(key, counts.encode(), revision)

    async def gateway_counts(self, event_type: str) -> GatewayCounts:
        e = await self.kv.get(GATEWAY_PREFIX + event_type)
        return GatewayCounts() if e is None else GatewayCounts.decode(e.value)

    async def add_gateway_counts(
        self,
        event_type: str,
        gateway_id: str,
        serial: int,
        deltas: dict[int, tuple[int, int]],
        *,
        now: float,
        prune_before: int,
    ) -> bool:
        """Add one gateway flush to the type's counts, at most once per ``serial``.

        Returns False when this serial was already applied (an earlier attempt
        whose outcome the gateway did not learn). Raises ConcurrentUpdateError
        when other writers keep winning the compare-and-set.
        """
        key = GATEWAY_PREFIX + event_type
        for _ in range(_CAS_ATTEMPTS):
            e = await self.kv.get(key)
            counts = GatewayCounts() if e is None else GatewayCounts.decode(e.value)
            mine = counts.writers.get(gateway_id)
            if mine is not None and mine[0] >= serial:
                return False
            for start, (accepted, rejected) in deltas.items():
                row = counts.buckets.setdefault(start, [0, 0])
                row[0] += accepted
                row[1] += rejected
            for start in [s for s in counts.buckets if s < prune_before]:
                del counts.buckets[start]
            counts.writers = {
                gid: v for gid, v in counts.writers.items() if now - v[1] < _WRITER_FORGET_SECS
            }
            counts.writers[gateway_id] = [float(serial), now]
            try:
                if e is None:
                    await self.kv.create(key, counts.encode())
                else:
                    await self.kv.update(key, counts.encode(), e.revision)
                return True
            except (ConcurrentUpdateError, KeyExistsError):
                continue
        raise ConcurrentUpdateError(
            f"could not add gateway counts of {event_type} after {_CAS_ATTEMPTS} attempts"
        )

    async def types(self) -> list[str]:
        """Types with any audit counts."""
        names = set()
        for key in await self.kv.keys():
            for prefix in (STREAM_PREFIX, GATEWAY_PREFIX):
                if key.startswith(prefix):
                    names.add(key[len(prefix) :])
        return sorted(names)
