"""Check closed buckets against a producer's ledger (DESIGN G1, G2, §11).

:func:`verify` reads the ``id`` column of every closed bucket (the files its
``_SUCCESS`` manifest lists, via :class:`courier.storage.BucketReader`) and
compares the ids, as 16-byte ledger keys, with the ledger:

* ``missing``: acknowledged, but in no closed bucket (a lost event, or a
  bucket still open: see ``open_buckets``);
* ``duplicated``: ids present more than once across the closed buckets;
* ``unexpected``: in a bucket but never acknowledged nor attempted with an
  unknown outcome (an id the producer never had acknowledged).

Ids whose outcome was unknown to the producer may or may not be delivered;
they are counted (``unknown_delivered``) but are not a failure.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench.loadgen.ledger import KEY_DTYPE, id_key, read_ledger
from courier.model import INVALID_TYPE
from courier.storage import BucketReader, BucketStore, Layout, read_manifest

_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
_DASHES = [8, 13, 18, 23]
_HEX_COLS = [i for i in range(36) if i not in _DASHES]
_SAMPLE = 5


def keys_of(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Ledger keys (``S16``) of an Arrow string column, vectorized for canonical UUIDs."""
    chunks = ids.chunks if isinstance(ids, pa.ChunkedArray) else [ids]
    out = [_chunk_keys(c) for c in chunks]
    return np.concatenate(out) if out else np.empty(0, dtype=KEY_DTYPE)


def _chunk_keys(arr: pa.Array) -> np.ndarray:
    n = len(arr)
    if n == 0:
        return np.empty(0, dtype=KEY_DTYPE)
    arr = arr.cast(pa.string())
    if arr.null_count == 0:
        _, offsets_buf, data_buf = arr.buffers()
        offsets = np.frombuffer(offsets_buf, dtype=np.int32)[arr.offset : arr.offset + n + 1]
        if np.all(np.diff(offsets) == 36):
            data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0] : offsets[-1]].reshape(n, 36)
            nib = _HEX[data[:, _HEX_COLS]]
            ok = (nib != 255).all(axis=1) & (data[:, _DASHES] == ord("-")).all(axis=1)
            packed = ((nib[:, 0::2] << 4) | nib[:, 1::2]).astype(np.uint8)
            keys = np.ascontiguousarray(packed).view(KEY_DTYPE).ravel().copy()
            for i in np.flatnonzero(~ok):
                keys[i] = id_key(arr[int(i)].as_py())
            return keys
    return np.array(
        [id_key(v) if v is not None else id_key("") for v in arr.to_pylist()], dtype=KEY_DTYPE
    )


def _key_text(key: bytes) -> str:
    import uuid

    return str(uuid.UUID(bytes=key.ljust(16, b"\0")))


@dataclass
class VerifyReport:
    """What the verifier found. ``ok`` iff nothing is missing, duplicated or unexpected."""

    acked: int
    unknown: int
    delivered_rows: int
    distinct_delivered: int
    missing: int
    duplicated: int
    duplicate_rows: int
    unexpected: int
    unknown_delivered: int
    acked_repeats: int
    closed_buckets: int
    open_buckets: int
    event_types: list[str]
    samples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.duplicated == 0 and self.unexpected == 0

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "ok": self.ok}

    def ledger_row(self) -> dict[str, int]:
        """The ledger check's columns of a fault or scale-out run's JSON row."""
        return {
            "acked": self.acked,
            "delivered": self.distinct_delivered,
            "lost": self.missing,
            "duplicated": self.duplicated,
            "unexpected": self.unexpected,
            "unknown_outcome": self.unknown,
        }

    def table(self) -> str:
        rows = [(k, v) for k, v in self.to_dict().items() if k not in ("samples", "event_types")]
        rows.append(("event_types", ",".join(self.event_types)))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        for what, sample in self.samples.items():
            if sample:
                lines.append(f"{what} (sample): {', '.join(sample)}")
        return "\n".join(lines)


def infer_bucket_width(data_dir: Path) -> int | None:
    """The width recorded in any manifest under ``data_dir``; None if none is closed."""
    for path in Path(data_dir).rglob("_SUCCESS"):
        if "_staging" in path.parts:
            continue
        return int(read_manifest(path).bucket_width_secs)
    return None


def verify(
    ledger_dir: Path,
    data_dir: Path | BucketStore,
    *,
    bucket_width_secs: int | None = None,
    event_types: list[str] | None = None,
) -> VerifyReport:
    """Compare the closed buckets of ``data_dir`` or of a bucket store (all types but
    ``_invalid`` unless ``event_types`` is given) with the ledger in ``ledger_dir``."""
    ledger = read_ledger(ledger_dir)
    root: Path | BucketStore
    if isinstance(data_dir, BucketStore):
        if bucket_width_secs is None:
            raise ValueError("verify needs bucket_width_secs to read a bucket store")
        root, width = data_dir, bucket_width_secs
    else:
        root = Path(data_dir)
        width = bucket_width_secs or infer_bucket_width(root) or 3600
    reader = BucketReader(root, width)
    layout = Layout(root, width)
    types = event_types or [t for t in layout.event_types() if t != INVALID_TYPE]
    parts: list[np.ndarray] = []
    closed = 0
    open_ = 0
    for t in types:
        starts = layout.closed_bucket_starts(t)
        closed += len(starts)
        open_ += len(set(layout.staging_bucket_starts(t)) - set(starts))
        for s in starts:
            table = reader.read(t, s, s + width, columns=["id"])
            if table.num_rows:
                parts.append(keys_of(table.column("id")))
    delivered = np.concatenate(parts) if parts else np.empty(0, dtype=KEY_DTYPE)
    delivered.sort()
    distinct, counts = np.unique(delivered, return_counts=True)
    dup_mask = counts > 1
    missing = np.setdiff1d(ledger.acked, distinct, assume_unique=True)
    known = np.union1d(ledger.acked, ledger.unknown)
    unexpected = np.setdiff1d(distinct, known, assume_unique=True)
    unknown_delivered = np.intersect1d(
        np.setdiff1d(ledger.unknown, ledger.acked, assume_unique=True), distinct, assume_unique=True
    )
    return VerifyReport(
        acked=len(ledger.acked),
        unknown=len(ledger.unknown),
        delivered_rows=len(delivered),
        distinct_delivered=len(distinct),
        missing=len(missing),
        duplicated=int(dup_mask.sum()),
        duplicate_rows=int((counts[dup_mask] - 1).sum()),
        unexpected=len(unexpected),
        unknown_delivered=len(unknown_delivered),
        acked_repeats=ledger.acked_repeats,
        closed_buckets=closed,
        open_buckets=open_,
        event_types=types,
        samples={
            "missing": [_key_text(k) for k in missing[:_SAMPLE]],
            "duplicated": [_key_text(k) for k in distinct[dup_mask][:_SAMPLE]],
            "unexpected": [_key_text(k) for k in unexpected[:_SAMPLE]],
        },
    )


def report_json(report: VerifyReport) -> str:
    return json.dumps(report.to_dict(), separators=(",", ":"))
