from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from courier.errors import StorageError
from courier.storage.atomic import (
    remove_stale_temps,
    sha256_file,
    write_bytes_atomic,
    write_parquet_atomic,
)


def _table(n: int = 1000) -> pa.Table:
    return pa.table(
        {
            "id": [f"id-{i}" for i in range(n)],
            "value": pa.array(range(n), type=pa.int64()),
            "nested": [{"a": i, "b": str(i)} for i in range(n)],
        }
    )


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_an_atomic_write_creates_missing_directories_and_leaves_no_temp_file(
    tmp_path: Path,
) -> None:
    target = tmp_path / "a" / "b" / "file.json"
    write_bytes_atomic(target, b"hello")
    assert target.read_bytes() == b"hello"
    assert _entries(target.parent) == ["file.json"]


def test_an_atomic_write_replaces_existing_content_whole(tmp_path: Path) -> None:
    target = tmp_path / "file.json"
    write_bytes_atomic(target, b"old")
    write_bytes_atomic(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert _entries(tmp_path) == ["file.json"]


def test_a_failed_rename_leaves_the_old_file_untouched_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "file.json"
    write_bytes_atomic(target, b"old")

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(StorageError, match=r"file\.json.*No space left on device"):
        write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert _entries(tmp_path) == ["file.json"]


def test_a_failed_parquet_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "part-00000.parquet"

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StorageError, match=r"part-00000\.parquet"):
        write_parquet_atomic(target, _table())
    assert _entries(tmp_path) == []


_WRITE_INTO_READ_ONLY = """
import sys
from pathlib import Path
from courier.errors import StorageError
from courier.storage.atomic import write_bytes_atomic
try:
    write_bytes_atomic(Path(sys.argv[1]) / "file.json", b"x")
except StorageError as exc:
    print(exc)
    sys.exit(0)
sys.exit("no StorageError")
"""


def _without_permission_override() -> list[str]:
    """Root bypasses permissions through CAP_DAC_OVERRIDE; setpriv drops it, so the
    check runs for real as root too (the CI machine runs as root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root ignores directory permissions and setpriv is not installed")
    drop = "-dac_override,-dac_read_search"
    return [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}"]


def test_writing_into_a_read_only_directory_raises_a_storage_error_naming_the_path(
    tmp_path: Path,
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        done = subprocess.run(
            [*_without_permission_override(), sys.executable, "-c", _WRITE_INTO_READ_ONLY, ro],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert re.search(r"ro/file\.json.*Permission denied", done.stdout), done.stdout
        assert _entries(ro) == []
    finally:
        ro.chmod(0o755)


def test_parquet_writes_of_identical_tables_are_byte_identical(tmp_path: Path) -> None:
    first = write_parquet_atomic(tmp_path / "one" / "part-00000.parquet", _table())
    second = write_parquet_atomic(tmp_path / "two" / "part-00000.parquet", _table())
    assert (tmp_path / "one" / "part-00000.parquet").read_bytes() == (
        tmp_path / "two" / "part-00000.parquet"
    ).read_bytes()
    assert first == second


def test_a_parquet_write_describes_the_file_it_wrote(tmp_path: Path) -> None:
    path = tmp_path / "part-00000.parquet"
    info = write_parquet_atomic(path, _table(300), row_group_rows=100)
    assert info.name == "part-00000.parquet"
    assert info.rows == 300
    assert info.bytes == path.stat().st_size
    assert info.sha256 == sha256_file(path)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 3
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert pq.read_table(path).equals(_table(300))


def test_stale_temp_files_are_removed_and_complete_files_kept(tmp_path: Path) -> None:
    staging = tmp_path / "_staging" / "PlaySong" / "date=2026-11-26" / "hour=10"
    staging.mkdir(parents=True)
    (staging / ".tmp-abc123-w1-1-2.parquet").write_bytes(b"partial")
    (tmp_path / ".tmp-def456-_SUCCESS").write_bytes(b"{")
    write_bytes_atomic(staging / "w1-3-4.parquet", b"complete")
    assert remove_stale_temps(tmp_path) == 2
    assert _entries(staging) == ["w1-3-4.parquet"]
    assert remove_stale_temps(tmp_path / "missing") == 0


def test_recent_temp_files_survive_a_cleanup_with_a_minimum_age(tmp_path: Path) -> None:
    (tmp_path / ".tmp-abc-file").write_bytes(b"in progress")
    assert remove_stale_temps(tmp_path, min_age_secs=3600) == 0
    assert _entries(tmp_path) == [".tmp-abc-file"]


def test_a_write_interrupted_by_a_non_storage_error_still_removes_its_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_bytes_atomic(tmp_path / "file.json", b"x")
    assert _entries(tmp_path) == []


def test_invalid_parquet_options_are_a_storage_error_and_leave_no_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="Unsupported compression"):
        write_parquet_atomic(tmp_path / "part-00000.parquet", _table(), compression="nonsense")
    assert _entries(tmp_path) == []
