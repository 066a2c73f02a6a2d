"""Atomic, durable file writes: every file Courier owns is written this way.

The protocol of :func:`write_bytes_atomic` and :func:`write_parquet_atomic`:

1. create the missing parent directories, fsyncing the parent of each new one;
2. create a temp file ``.tmp-<random>-<name>`` in the destination directory
   (exclusive create, so two writers never share one);
3. write the content and fsync the temp file;
4. rename the temp file over the destination (atomic on POSIX);
5. fsync the destination directory so the rename itself is durable.

A crash before step 4 leaves the destination untouched and a stray temp file,
which :func:`remove_stale_temps` deletes and every listing ignores (its name
starts with a dot). A crash between steps 4 and 5 may, after a power failure,
leave the old content (or no file) in place: never a partial file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from courier.errors import StorageError

if TYPE_CHECKING:  # pyarrow loads inside the Parquet writers: the SDK's spool never needs it
    import pyarrow as pa

TEMP_PREFIX = ".tmp-"
_HASH_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class FileInfo:
    """What a written file is: its name, size, row count and SHA-256 (hex)."""

    name: str
    bytes: int
    rows: int
    sha256: str


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durable(directory: Path) -> None:
    """Create ``directory`` and its missing parents, fsyncing each new entry's parent."""
    missing: list[Path] = []
    current = directory
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for new_dir in reversed(missing):
        with contextlib.suppress(FileExistsError):  # a concurrent writer made it first
            new_dir.mkdir()
        fsync_dir(new_dir.parent)


def describe_error(exc: BaseException) -> str:
    """A short cause for an error message: the OS reason and file, or the exception text."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


def _write_atomic(
    path: Path,
    fill: Callable[[BinaryIO], None],
    storage_errors: tuple[type[BaseException], ...] = (OSError,),
) -> None:
    """Run the numbered protocol of the module docstring; ``fill`` writes the content.

    ``storage_errors`` are the exceptions ``fill`` raises for a failed write (they
    become StorageError); anything else is a bug or an interrupt and passes through.
    """
    tmp = path.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}-{path.name}"
    try:
        # 1. parent directories
        make_dirs_durable(path.parent)
        # 2. exclusive temp file in the destination directory
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with open(fd, "wb") as f:
            # 3. content, then fsync
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        # 4. atomic rename
        os.replace(tmp, path)
        # 5. make the rename durable
        fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if not isinstance(exc, storage_errors):
            raise  # a bug or an interrupt, not a storage failure: surface it unchanged
        raise StorageError(
            f"could not write {path}: {describe_error(exc)}; the destination was not changed "
            "(or holds complete content if only the final directory fsync failed)"
        ) from exc


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably; StorageError on failure."""

    def fill(f: BinaryIO) -> None:
        f.write(data)

    _write_atomic(path, fill)


def write_parquet_atomic(
    path: Path,
    table: pa.Table,
    *,
    compression: str = "zstd",
    row_group_rows: int = 128 * 1024,
) -> FileInfo:
    """Write ``table`` as Parquet to ``path`` atomically and describe the result.

    The output is deterministic: the same table with the same options gives the
    same bytes (and checksum) with the same pyarrow version, so re-running a
    close after a crash rewrites identical files.
    """
    import pyarrow as pa

    def fill(f: BinaryIO) -> None:
        write_parquet(f, table, compression=compression, row_group_rows=row_group_rows)

    _write_atomic(path, fill, (OSError, pa.ArrowException))
    return _file_info(path, table.num_rows)


def write_parquet(
    f: BinaryIO,
    table: pa.Table,
    *,
    compression: str = "zstd",
    row_group_rows: int = 128 * 1024,
    statistics: bool = True,
) -> None:
    """``table`` as Parquet into ``f``, the way every staging and bucket file is written
    (deterministic bytes for the same table and options; raises pa.ArrowException).

    ``statistics=False`` leaves out the column min/max statistics: cheaper to write,
    for files nobody prunes by them (staging files)."""
    import pyarrow.parquet as pq

    pq.write_table(
        table,
        f,
        compression=compression,
        row_group_size=row_group_rows,
        write_statistics=statistics,
    )


def write_parquet_chunks_atomic(
    path: Path,
    schema: pa.Schema,
    chunks: Iterable[pa.Table],
    *,
    compression: str = "zstd",
) -> FileInfo:
    """Stream ``chunks`` (each becomes one row group) into one Parquet file, atomically.

    Memory holds one chunk at a time. The bytes are deterministic for the same
    chunks, so callers that need reproducible files pass fixed-size chunks.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 0

    def fill(f: BinaryIO) -> None:
        nonlocal rows
        with pq.ParquetWriter(f, schema, compression=compression, write_statistics=True) as w:
            for chunk in chunks:
                w.write_table(chunk, row_group_size=max(1, chunk.num_rows))
                rows += chunk.num_rows

    _write_atomic(path, fill, (OSError, pa.ArrowException))
    return _file_info(path, rows)


def _file_info(path: Path, rows: int) -> FileInfo:
    """Name, size and checksum of a file just written (read back from disk)."""
    try:
        size = path.stat().st_size
        digest = sha256_file(path)
    except OSError as exc:
        raise StorageError(
            f"could not read back {path} after writing it: {describe_error(exc)}"
        ) from exc
    return FileInfo(name=path.name, bytes=size, rows=rows, sha256=digest)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def remove_stale_temps(directory: Path, *, min_age_secs: float = 0.0) -> int:
    """Delete ``.tmp-*`` files under ``directory`` (recursively) left by a crash.

    Another live writer may be filling a temp file right now; pass
    ``min_age_secs`` (e.g. a few flush intervals) to leave recent ones alone.
    Returns how many files were deleted; a missing directory counts as zero.
    """
    if not directory.is_dir():
        return 0
    cutoff = time.time() - min_age_secs
    removed = 0
    for tmp in directory.rglob(f"{TEMP_PREFIX}*"):
        try:
            if not tmp.is_file() or (min_age_secs > 0 and tmp.stat().st_mtime > cutoff):
                continue
            tmp.unlink()
            removed += 1
        except FileNotFoundError:
            continue  # its writer finished (renamed) or another cleaner got there first
        except OSError as exc:
            raise StorageError(
                f"could not remove stale temp file {tmp}: {describe_error(exc)}"
            ) from exc
    return removed


def move_durable(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` (same filesystem) and make the move durable.

    Creates ``dst``'s missing directories (fsynced), renames (atomic on POSIX:
    the file is at one of the two names, never both or neither), then fsyncs
    both directories. StorageError on failure; ``src`` is then still in place
    unless the rename itself happened.
    """
    try:
        make_dirs_durable(dst.parent)
        os.replace(src, dst)
        fsync_dir(dst.parent)
        fsync_dir(src.parent)
    except OSError as exc:
        raise StorageError(f"could not move {src} to {dst}: {describe_error(exc)}") from exc
