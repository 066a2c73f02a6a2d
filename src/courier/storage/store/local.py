"""The bucket store on a local directory: today's default, one machine.

Every write follows the protocol of :mod:`courier.storage.atomic`, split so
that only its publishing step runs under the store's lock:

1. create the missing parent directories, fsyncing each new one's parent;
2. write the content to an exclusive temp file ``.tmp-<random>-<name>`` in the
   destination directory, and fsync it;
3. publish it, holding ``<root>/.courier-store.lock`` (``flock``):
   - ``put``/``put_file``: rename over the destination;
   - ``create``: hard-link to the destination, which fails if it exists
     (so exactly one racing creator wins and nothing is overwritten);
   - ``replace``: compare the destination's SHA-256 with the version token,
     then rename over it;
4. remove the temp name (after a link) and fsync the destination directory.

The lock makes a compare-and-swap atomic with respect to every other publish
and delete by any process on this machine; readers never take it (a rename is
atomic for them). Version tokens are the content's SHA-256.

A crash before step 3 leaves the destination untouched and a stray temp file
(hidden from listings, deleted by :func:`courier.storage.remove_stale_temps`);
a crash between 3 and 4 may, after a power failure, lose the publish, never
leave a partial object.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from courier.errors import ObjectExistsError, ObjectNotFoundError, StaleVersionError, StorageError
from courier.storage.atomic import TEMP_PREFIX, describe_error, fsync_dir, make_dirs_durable
from courier.storage.store.base import ObjectInfo, Versioned, check_key, check_prefix

LOCK_NAME = ".courier-store.lock"


class LocalStore:
    """A :class:`~courier.storage.store.base.BucketStore` on a directory; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # -- writes --------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        self._write(path, lambda f: f.write(data), lambda tmp: os.replace(tmp, path))

    def put_file(self, key: str, path: Path) -> None:
        dest = self._path(key)

        def fill(f: BinaryIO) -> None:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, f, 1024 * 1024)

        self._write(dest, fill, lambda tmp: os.replace(tmp, dest))

    def create(self, key: str, data: bytes) -> str:
        path = self._path(key)

        def publish(tmp: Path) -> None:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise ObjectExistsError(f"{path} already exists; it was not overwritten") from None

        self._write(path, lambda f: f.write(data), publish)
        return _version(data)

    def replace(self, key: str, data: bytes, *, version: str) -> str:
        path = self._path(key)

        def publish(tmp: Path) -> None:
            try:
                current: str | None = _version(path.read_bytes())
            except FileNotFoundError:
                current = None
            if current != version:
                state = "no longer exists" if current is None else "has changed"
                raise StaleVersionError(
                    f"{path} {state} since version {version[:12]} was read; nothing was "
                    "written (read it again and decide anew)"
                )
            os.replace(tmp, path)

        self._write(path, lambda f: f.write(data), publish)
        return _version(data)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            with self._locked():
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(
                f"could not delete {path}: {describe_error(exc)}; it may still exist"
            ) from exc

    # -- reads ---------------------------------------------------------------

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{path} does not exist") from None
        except OSError as exc:
            raise StorageError(f"could not read {path}: {describe_error(exc)}") from exc

    def get_versioned(self, key: str) -> Versioned:
        data = self.get(key)
        return Versioned(data, _version(data))

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"could not stat {path}: {describe_error(exc)}") from exc
        return ObjectInfo(key, st.st_size) if path.is_file() else None

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        prefix = check_prefix(prefix)
        top = self.root / prefix if prefix else self.root
        found: list[ObjectInfo] = []
        if not top.is_dir():
            return []
        try:
            for dirpath, dirnames, filenames in os.walk(top, onerror=_raise_unless_gone):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                rel = Path(dirpath).relative_to(self.root).as_posix()
                for name in filenames:
                    if name.startswith("."):
                        continue  # temp and lock files
                    key = name if rel == "." else f"{rel}/{name}"
                    with contextlib.suppress(FileNotFoundError):  # deleted while listing
                        found.append(ObjectInfo(key, os.stat(os.path.join(dirpath, name)).st_size))
        except OSError as exc:
            raise StorageError(f"could not list {top}: {describe_error(exc)}") from exc
        return sorted(found, key=lambda o: o.key)

    def list_dirs(self, prefix: str) -> list[str]:
        prefix = check_prefix(prefix)
        top = self.root / prefix if prefix else self.root
        try:
            return sorted(
                p.name for p in top.iterdir() if p.is_dir() and not p.name.startswith(".")
            )
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"could not list {top}: {describe_error(exc)}") from exc

    @contextlib.contextmanager
    def local_file(self, key: str, scratch_dir: Path) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(f"{path} does not exist")
        yield path

    # -- helpers -------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        make_dirs_durable(self.root)
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _write(
        self, path: Path, fill: Callable[[BinaryIO], object], publish: Callable[[Path], None]
    ) -> None:
        """Run the numbered protocol of the module docstring; ``publish`` is step 3."""
        tmp = path.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}-{path.name}"
        try:
            # 1. parent directories
            make_dirs_durable(path.parent)
            # 2. exclusive temp file, content, fsync
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with open(fd, "wb") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())
            # 3. publish under the store's lock
            with self._locked():
                publish(tmp)
            # 4. drop the temp name (still there after a link or a refusal), fsync the directory
            tmp.unlink(missing_ok=True)
            fsync_dir(path.parent)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if not isinstance(exc, OSError):
                raise  # our own answers (exists, stale), bugs and interrupts pass unchanged
            raise StorageError(
                f"could not write {path}: {describe_error(exc)}; the object was not changed "
                "(or holds complete content if only the final directory fsync failed)"
            ) from exc


def _version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _raise_unless_gone(exc: OSError) -> None:
    if not isinstance(exc, FileNotFoundError):  # a directory deleted while listing is just empty
        raise exc
