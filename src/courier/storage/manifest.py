"""The ``_SUCCESS`` manifest of a closed bucket (JSON, ``format_version`` 2; 1 still reads).

Its existence is the definition of "closed": the closer writes it last, after
every final file is durable, so a reader that finds it can trust the files it
lists (sizes and SHA-256 included). It is written with sorted keys and a
2-space indent, so the same content always gives the same bytes and a re-run
close after a crash rewrites an identical file.

Fields (times are RFC 3339 UTC, :func:`courier.model.iso_utc`):

- ``event_type``, ``bucket_start``, ``bucket_end``, ``bucket_start_epoch``,
  ``bucket_width_secs``: which bucket;
- ``events`` (unique rows written), ``input_events`` (rows read from staging),
  ``duplicates_dropped`` (every input row not written: ``input_events - events``),
  split into ``duplicates_dropped_within_bucket`` (repeats of an id inside the
  bucket), ``duplicates_dropped_previous_bucket`` (rows whose id the previous
  bucket holds) and ``duplicates_dropped_other_buckets`` (rows whose id another
  closed bucket within the dedup horizon holds: a retry or redelivery that came
  buckets later, G2; for a re-close, also a later bucket);
- ``ids_older_than_horizon``: UUIDv7 ids whose own time is older than the dedup
  horizon: delivered, but not checked against buckets that old;
- ``skewed_in`` (events moved here from an already-closed bucket);
- ``stream_seq_ranges``: the JetStream sequences covered, as maximal ranges;
- ``files``: the final Parquet files; ``staging_files``: the inputs consumed;
- ``schema_versions``, ``watermark``, ``closed_at``, ``close_delay_secs``;
- ``dcs`` (format 2): per DC that accepted events of the bucket (the ``received_dc``
  column), its ``events`` and their transfer delay (delivery-region store time minus DC
  receive time, ``published_at - received_at``) ``transfer_delay_p50_secs``, ``_p99_``
  and ``_max_``. Rows with no DC (``received_dc`` null: a deployment without DC names,
  or staged before format 2) are in ``events`` but in no DC, so the DCs' events sum to
  ``events`` exactly when every row has one. A format 1 manifest reads with ``dcs``
  empty: it was closed before the column existed;
- ``version`` (1 as closed; each ``courier repair reclose`` adds one) and ``repair``
  (null, or what the re-close that wrote this version did; the previous version is
  kept beside it as ``_SUCCESS.v<N>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from courier.errors import ManifestError
from courier.storage.atomic import write_bytes_atomic

FORMAT_VERSION = 2
#: Versions this Courier decodes (1: before ``dcs``).
READABLE_VERSIONS = (1, 2)


class ManifestFile(msgspec.Struct):
    """One final Parquet file of a bucket."""

    name: str
    bytes: int
    rows: int
    sha256: str


class SeqRange(msgspec.Struct):
    """An inclusive range of stream sequences, ``first <= last``."""

    first: int
    last: int


class DcTransfer(msgspec.Struct, kw_only=True):
    """Events of a bucket one DC accepted, and their transfer delay (see the module doc)."""

    events: int
    transfer_delay_p50_secs: float
    transfer_delay_p99_secs: float
    transfer_delay_max_secs: float


class ManifestRepair(msgspec.Struct, kw_only=True):
    """How a re-closed version came to be (``courier repair reclose``)."""

    repair_id: str
    reason: str
    repaired_at: str
    #: The previous version's manifest, kept in the bucket directory.
    previous_manifest: str
    previous_events: int


class Manifest(msgspec.Struct, kw_only=True):
    """The content of a ``_SUCCESS`` file; see the module docstring."""

    format_version: int = FORMAT_VERSION
    event_type: str
    bucket_start: str
    bucket_end: str
    bucket_start_epoch: int
    bucket_width_secs: int
    events: int
    input_events: int
    duplicates_dropped: int
    duplicates_dropped_previous_bucket: int
    #: Absent from manifests written before the dedup horizon (read as 0).
    duplicates_dropped_within_bucket: int = 0
    duplicates_dropped_other_buckets: int = 0
    ids_older_than_horizon: int = 0
    skewed_in: int
    stream_seq_ranges: list[SeqRange]
    files: list[ManifestFile]
    staging_files: list[str]
    schema_versions: list[int]
    watermark: str
    closed_at: str
    close_delay_secs: float
    version: int = 1
    repair: ManifestRepair | None = None
    #: Fields whose column keeps an earlier name (a rename through Avro ``aliases``):
    #: ``{"field.path": "column.path"}``, from ``CompiledType.renamed_columns``.
    renamed_columns: dict[str, str] = msgspec.field(default_factory=dict)
    #: Per accepting DC, by name (format 2; a format 1 manifest has none).
    dcs: dict[str, DcTransfer] = msgspec.field(default_factory=dict)


class _Versioned(msgspec.Struct):
    format_version: int


def encode_manifest(manifest: Manifest) -> bytes:
    """Canonical bytes of a manifest: sorted keys, 2-space indent, trailing newline."""
    compact = msgspec.json.encode(manifest, order="sorted")
    return msgspec.json.format(compact, indent=2) + b"\n"


def write_manifest(path: Path, manifest: Manifest) -> None:
    """Write ``manifest`` to ``path`` atomically (StorageError on failure)."""
    write_bytes_atomic(path, encode_manifest(manifest))


def read_manifest(path: Path) -> Manifest:
    """Read and validate a manifest; ManifestError naming ``path`` if it cannot be used."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ManifestError(f"manifest {path} does not exist: the bucket is not closed") from exc
    except OSError as exc:
        raise ManifestError(f"could not read manifest {path}: {exc.strerror or exc}") from exc
    return decode_manifest(data, str(path))


def decode_manifest(data: bytes, where: str) -> Manifest:
    """Validate and decode manifest bytes read from ``where`` (named in every ManifestError)."""
    try:
        version = msgspec.json.decode(data, type=_Versioned).format_version
    except msgspec.DecodeError as exc:
        raise ManifestError(f"manifest {where} is corrupt: {exc}") from exc
    if version not in READABLE_VERSIONS:
        raise ManifestError(
            f"manifest {where} has format_version {version}; this Courier reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} (upgrade Courier to read it)"
        )
    try:
        return msgspec.json.decode(data, type=Manifest)
    except msgspec.DecodeError as exc:
        raise ManifestError(f"manifest {where} is corrupt: {exc}") from exc


def seq_ranges(seqs: pa.Array | pa.ChunkedArray | Sequence[int]) -> list[SeqRange]:
    """Compress stream sequences into sorted, maximal, inclusive ranges.

    Input may be unsorted and hold duplicates or nulls (ignored). Vectorised
    with pyarrow compute, so millions of sequences cost milliseconds.
    """
    if isinstance(seqs, pa.ChunkedArray):
        arr: pa.Array = seqs.combine_chunks()
    elif isinstance(seqs, pa.Array):
        arr = seqs
    else:
        arr = pa.array(seqs, type=pa.int64())
    arr = pc.drop_null(arr).cast(pa.int64())
    if len(arr) == 0:
        return []
    # Sort (skipped when already ascending, the usual case for one writer's
    # flush); duplicates then sit side by side with a step of 0.
    steps = pc.pairwise_diff(arr)
    min_step = pc.min(steps).as_py()
    if min_step is not None and min_step < 0:
        arr = pc.take(arr, pc.array_sort_indices(arr))
        steps = pc.pairwise_diff(arr)
    # A range starts where the step from the previous sequence is more than 1;
    # the first element's step is null and always starts one. A range ends
    # just before the next one starts, or at the last element.
    is_start = pc.fill_null(pc.greater(steps, 1), True)
    start_idx = pc.indices_nonzero(is_start)
    last_idx = pa.concat_arrays(
        [
            pc.subtract(start_idx.slice(1), pa.scalar(1, pa.uint64())),
            pa.array([len(arr) - 1], type=pa.uint64()),
        ]
    )
    firsts = pc.take(arr, start_idx).to_pylist()
    lasts = pc.take(arr, last_idx).to_pylist()
    return [SeqRange(first=f, last=last) for f, last in zip(firsts, lasts, strict=True)]
