"""Stored NDJSON into Arrow with DuckDB's JSON reader, for large bodies the gateway built.

``pyarrow.json`` is the stored form's reference decoder and stays the only one
for anything not known to be well-typed. On the writer's 8 MiB buffers it cost
~2.0-2.2 µs of CPU a row on the development machine, two thirds of the writer's
CPU; DuckDB's ``yyjson``-based ``json_transform_strict`` reads the same lines into
the same Arrow table in ~1.0-1.3 (issue 13). Three differences decide where it may
be used:

- **DuckDB converts a value of the wrong JSON type where a cast exists** (``"5"``
  into a ``long``, ``1.5`` rounded into a ``long``, an object into a ``string``),
  where ``pyarrow.json`` refuses the body and the message is quarantined (G6). So
  DuckDB reads only batches whose every message the gateway's group commit built
  from validated events (:func:`built_by_gateway`); a republished or hand-published
  body goes through ``pyarrow.json``.
- **Each call costs ~1-2 ms** (planning, the result's conversion), so it pays only
  from a few thousand lines (:data:`MIN_LINES`).
- **Strict mode refuses a missing key**, so a type is read by DuckDB only when every
  key of its read schema is in every line: never for a type with a union
  (``{"<branch>": v}`` holds one key) or a renamed field (a line holds one of its
  names), and only for column types that convert exactly (``float`` is left out:
  ``DOUBLE`` then ``FLOAT`` could round twice; ``null`` has no DuckDB type).

Whatever DuckDB does not read (an error, a line count that differs, a type it is
not used for) is read by ``pyarrow.json``, which then decides, with its own
messages, whether the body is poison.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from courier.schema.avro import AvroType, Record, Union, inner_types

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "MIN_LINES",
    "BulkJsonReader",
    "bound_malloc_retention",
    "built_by_gateway",
    "structure_of",
]

log = logging.getLogger(__name__)

#: Below this many lines a call's fixed cost (~1-2 ms) outweighs what DuckDB saves.
MIN_LINES = 4096
_MSG_ID_HEADER = "Nats-Msg-Id"
#: The id the gateway's group commit gives a message is ``<type>:<32 hex digits>``
#: (:func:`courier.gateway.publisher.message_id`); republishes use ``replay.…``.
_DIGEST = re.compile(r"[0-9a-f]{32}")
#: ``mallopt``'s M_MMAP_THRESHOLD, and the value the reader sets (see
#: :func:`bound_malloc_retention`).
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 1024 * 1024

_LEAVES: dict[pa.DataType, str] = {
    pa.bool_(): "BOOLEAN",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.uint8(): "UTINYINT",
    pa.float64(): "DOUBLE",
    pa.string(): "VARCHAR",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
}


def built_by_gateway(event_type: str, headers: Mapping[str, str]) -> bool:
    """Whether the gateway's group commit built this message of ``event_type`` (from
    validated events), by its ``Nats-Msg-Id``."""
    msg_id = headers.get(_MSG_ID_HEADER, "")
    start = len(event_type) + 1
    return msg_id[:start] == f"{event_type}:" and _DIGEST.fullmatch(msg_id, start) is not None


def structure_of(read_schema: pa.Schema, record: Record | None) -> str | None:
    """The ``json_transform`` structure of ``read_schema`` (the JSON read form of a
    type whose payload is ``record``), or None where DuckDB must not read it."""
    if record is not None and not _every_key_present(record):
        return None
    fields = {}
    for f in read_schema:
        t = _structure(f.type)
        if t is None:
            return None
        fields[f.name] = t
    return json.dumps(fields)


def _every_key_present(t: AvroType) -> bool:
    """Whether every stored line has every key of ``t``'s read form: a union value holds
    one branch's key, a renamed field one of its names."""
    if isinstance(t, Union):
        return False
    if isinstance(t, Record) and any(len(f.stored_names) != 1 for f in t.fields):
        return False
    return all(_every_key_present(inner) for inner in inner_types(t))


def bound_malloc_retention() -> bool:
    """Have the C library's ``malloc`` hand blocks of 1 MiB or more straight back to the
    OS when freed. Returns whether it was set (glibc only; an operator's
    ``MALLOC_MMAP_THRESHOLD_`` wins).

    DuckDB allocates its results with ``malloc``. glibc raises its mmap threshold each
    time a large block is freed, so later blocks come from the heap, where freed ones
    stay resident between the buffers still held: the writer's RSS rose from ~560 to
    ~810-930 MiB with DuckDB reading its buffers (``bench.e2e --duration 30``), and
    fell back to ~575-640 with this (3 interleaved pairs; writer CPU +0.17 core-s per
    million events, for the page faults of fresh blocks). A process-wide setting: the
    reader sets it for the process that decodes.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False  # not glibc: nothing to bound here
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES))


def _quoted(text: str) -> str:
    return text.replace("'", "''")


def _structure(t: pa.DataType) -> Any:
    if pa.types.is_struct(t):
        children = {}
        for i in range(t.num_fields):
            child = _structure(t.field(i).type)
            if child is None:
                return None
            children[t.field(i).name] = child
        return children
    if pa.types.is_list(t):
        item = _structure(t.value_type)
        return None if item is None else [item]
    if pa.types.is_decimal128(t):
        return f"DECIMAL({t.precision},{t.scale})"
    return _LEAVES.get(t)


class BulkJsonReader:
    """Reads stored NDJSON into Arrow with one in-memory DuckDB database, one
    connection per thread that uses it (the writer decodes in worker threads).

    Owned by the service that decodes (:meth:`close` at its end); never shared
    across processes.
    """

    def __init__(self, *, min_lines: int = MIN_LINES) -> None:
        import duckdb  # heavy: loaded by the services that decode, not by importers

        bound_malloc_retention()
        self._duckdb = duckdb
        self.min_lines = min_lines
        #: Lines read so far (by any thread).
        self.rows = 0
        # One thread per query: callers decode in worker threads already.
        self._db: duckdb.DuckDBPyConnection | None = duckdb.connect(
            ":memory:", config={"threads": 1}
        )
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def close(self) -> None:
        with self._lock:
            for cursor in self._cursors:
                cursor.close()
            self._cursors.clear()
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> BulkJsonReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _cursor(self) -> duckdb.DuckDBPyConnection | None:
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cursor is not None:
            return cursor
        with self._lock:
            if self._db is None:
                return None  # closed
            cursor = self._db.cursor()
            cursor.execute("SET TimeZone = 'UTC'")  # TIMESTAMPTZ comes out as tz=UTC
            self._cursors.append(cursor)
        self._local.cursor = cursor
        return cursor

    def read(
        self, bodies: Sequence[bytes], lines: int, structure: str, schema: pa.Schema
    ) -> pa.Table | None:
        """The ``lines`` lines of ``bodies`` (each body ending in ``\\n``) as a table of
        exactly ``schema``; None when DuckDB did not read them (the caller reads them
        otherwise): fewer than :attr:`min_lines` lines, or any error.

        Each body is a chunk of the input column, so they are never joined (copying
        8 MiB, page by page into fresh memory, was 7 % of the writer's profile).
        """
        if lines < self.min_lines:
            return None
        chunks = []
        for body in bodies:
            ends = np.flatnonzero(np.frombuffer(body, dtype=np.uint8) == 10)
            if not len(ends):
                if body and not body.isspace():
                    return None  # text without a line end
                continue
            if ends[-1] != len(body) - 1:
                return None  # text after the last line end
            starts = np.empty(len(ends) + 1, dtype=np.int64)
            starts[0] = 0
            starts[1:] = ends + 1
            chunks.append(
                pa.LargeStringArray.from_buffers(
                    len(ends), pa.py_buffer(starts), pa.py_buffer(body)
                )
            )
        if sum(len(c) for c in chunks) != lines:
            return None
        column = pa.chunked_array(chunks, type=pa.large_string())
        cursor = self._cursor()
        if cursor is None:
            return None
        try:
            result = (
                cursor.from_arrow(pa.table({"line": column}))
                .select(f"unnest(json_transform_strict(line, '{_quoted(structure)}'))")
                .to_arrow_table()
            )
            if result.num_rows != lines:
                return None
            table = result.rename_columns(schema.names).cast(schema)
        except (self._duckdb.Error, pa.ArrowException) as exc:
            # Not expected of a gateway-built body: say so once per read schema (types of
            # the same shape share one), as each such body now costs both decoders.
            level = logging.DEBUG if structure in self._warned else logging.WARNING
            self._warned.add(structure)
            log.log(
                level,
                "DuckDB did not read %d stored lines; pyarrow.json reads them: %s",
                lines,
                exc,
            )
            return None
        with self._lock:
            self.rows += lines
        return table
