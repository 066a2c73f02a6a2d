"""Local copies of store objects for one job: fetched in parallel, each once, and deleted
when the job ends, also when a download fails."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from courier.errors import StorageError
from courier.storage.copies import LocalCopies
from courier.storage.store import LocalStore, MemoryStore


def _files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file()) if d.exists() else []


def test_objects_are_copied_in_parallel_missing_ones_left_out_and_copies_deleted_at_the_end(
    tmp_path: Path,
) -> None:
    store = MemoryStore()
    keys = [f"_staging/T/part-{i:03d}.parquet" for i in range(40)]
    for i, k in enumerate(keys):
        store.put(k, f"object {i}".encode())
    scratch = tmp_path / "scratch"
    with LocalCopies(store, scratch) as copies:
        got = copies.fetch([*keys, "_staging/T/gone.parquet"])
        assert list(got) == keys
        assert [got[k].read_bytes() for k in keys] == [f"object {i}".encode() for i in range(40)]
        assert copies.fetch(keys[:3]) == {k: got[k] for k in keys[:3]}  # fetched once
        assert len(_files(scratch)) == 40
    assert _files(scratch) == []


def test_a_local_store_hands_out_its_own_files_and_copies_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    store.put("a/b.parquet", b"x")
    with LocalCopies(store, tmp_path / "scratch") as copies:
        assert copies.fetch(["a/b.parquet"]) == {"a/b.parquet": tmp_path / "root" / "a/b.parquet"}
    assert (tmp_path / "root" / "a/b.parquet").read_bytes() == b"x"
    assert not (tmp_path / "scratch").exists()


class _FlakyStore(MemoryStore):
    """One object cannot be downloaded (the store fails on it)."""

    @contextlib.contextmanager
    def local_file(self, key: str, scratch_dir: Path) -> Iterator[Path]:
        if key.endswith("bad"):
            raise StorageError(f"could not download {key}; nothing was kept")
        with super().local_file(key, scratch_dir) as path:
            yield path


def test_a_failed_download_raises_and_the_other_copies_are_still_deleted(tmp_path: Path) -> None:
    store = _FlakyStore()
    for k in ("x/1", "x/2", "x/bad", "x/3"):
        store.put(k, b"data")
    scratch = tmp_path / "scratch"
    with pytest.raises(StorageError, match="x/bad"), LocalCopies(store, scratch) as copies:
        copies.fetch(["x/1", "x/2", "x/bad", "x/3"])
    assert _files(scratch) == []


def test_keys_may_come_from_a_generator(tmp_path: Path) -> None:
    store = MemoryStore()
    store.put("a/1", b"1")
    store.put("a/2", b"2")
    with LocalCopies(store, tmp_path / "scratch") as copies:
        got = copies.fetch(f"a/{i}" for i in (1, 2))
        assert [p.read_bytes() for p in got.values()] == [b"1", b"2"]
