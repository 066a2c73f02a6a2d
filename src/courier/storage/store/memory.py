"""An in-memory bucket store for unit tests of the code above the seam (STYLE rule 3).

It keeps the guarantees of :mod:`courier.storage.store.base` (create-only,
compare-and-swap, atomic puts) under one lock, and counts each operation so a
test can assert, for example, that ``_SUCCESS`` was created exactly once.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from courier.errors import ObjectExistsError, ObjectNotFoundError, StaleVersionError, StorageError
from courier.storage.store.base import ObjectInfo, Versioned, check_key, check_prefix


class MemoryStore:
    """A :class:`~courier.storage.store.base.BucketStore` held in a dict; thread-safe."""

    def __init__(self, name: str = "test") -> None:
        self._name = name
        self._objects: dict[str, tuple[bytes, str]] = {}
        self._lock = threading.Lock()
        self._versions = itertools.count(1)
        #: Successful operations by name ("put", "create", "replace", "delete", ...).
        self.calls: Counter[str] = Counter()

    @property
    def url(self) -> str:
        return f"memory://{self._name}"

    def __repr__(self) -> str:
        return f"MemoryStore({self._name!r}, objects={len(self._objects)})"

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._objects[check_key(key)] = (bytes(data), self._next_version())
            self.calls["put"] += 1

    def put_file(self, key: str, path: Path) -> None:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise StorageError(
                f"could not upload {path} to {self.url}/{key}: {exc}; the object was not changed"
            ) from exc
        self.put(key, data)

    def create(self, key: str, data: bytes) -> str:
        with self._lock:
            if check_key(key) in self._objects:
                raise ObjectExistsError(f"{self.url}/{key} already exists; it was not overwritten")
            version = self._next_version()
            self._objects[key] = (bytes(data), version)
            self.calls["create"] += 1
            return version

    def replace(self, key: str, data: bytes, *, version: str) -> str:
        with self._lock:
            current = self._objects.get(check_key(key))
            if current is None or current[1] != version:
                state = "no longer exists" if current is None else "has changed"
                raise StaleVersionError(
                    f"{self.url}/{key} {state} since version {version} was read; "
                    "nothing was written (read it again and decide anew)"
                )
            new_version = self._next_version()
            self._objects[key] = (bytes(data), new_version)
            self.calls["replace"] += 1
            return new_version

    def get(self, key: str) -> bytes:
        return self.get_versioned(key).data

    def get_versioned(self, key: str) -> Versioned:
        with self._lock:
            found = self._objects.get(check_key(key))
        if found is None:
            raise ObjectNotFoundError(f"{self.url}/{key} does not exist")
        return Versioned(found[0], found[1])

    def head(self, key: str) -> ObjectInfo | None:
        with self._lock:
            found = self._objects.get(check_key(key))
        return None if found is None else ObjectInfo(key, len(found[0]))

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        start = _dir_prefix(check_prefix(prefix))
        with self._lock:
            return sorted(
                (ObjectInfo(k, len(v[0])) for k, v in self._objects.items() if k.startswith(start)),
                key=lambda o: o.key,
            )

    def list_dirs(self, prefix: str) -> list[str]:
        start = _dir_prefix(check_prefix(prefix))
        with self._lock:
            keys = [k[len(start) :] for k in self._objects if k.startswith(start)]
        return sorted({rest.split("/", 1)[0] for rest in keys if "/" in rest})

    def delete(self, key: str) -> None:
        with self._lock:
            if self._objects.pop(check_key(key), None) is not None:
                self.calls["delete"] += 1

    @contextlib.contextmanager
    def local_file(self, key: str, scratch_dir: Path) -> Iterator[Path]:
        data = self.get(key)
        scratch = Path(scratch_dir)
        scratch.mkdir(parents=True, exist_ok=True)
        path = scratch / f"{next(self._versions)}-{key.rsplit('/', 1)[-1]}"
        path.write_bytes(data)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def _next_version(self) -> str:
        return str(next(self._versions))


def _dir_prefix(prefix: str) -> str:
    return f"{prefix}/" if prefix else ""
