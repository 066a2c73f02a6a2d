"""Local paths of store objects for one job (a close, a re-close, an audit scan).

DuckDB and pyarrow read local files; an object store has none. :class:`LocalCopies`
hands out :meth:`BucketStore.local_file` paths and keeps each one until the job
ends: on a local store the object's own file (nothing is copied), elsewhere a
scratch copy in the process's own scratch directory, deleted when the job ends
(also when it fails). Each key is fetched at most once per job.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import TracebackType

from courier.storage.store import BucketStore


class LocalCopies:
    """Use as a context manager; :meth:`path` gives a local file holding a key's bytes."""

    def __init__(self, store: BucketStore, scratch_dir: Path) -> None:
        self.store = store
        self.scratch_dir = scratch_dir
        self._stack = contextlib.ExitStack()
        self._paths: dict[str, Path] = {}

    def path(self, key: str) -> Path:
        """A local file with ``key``'s bytes until the job ends; ObjectNotFoundError if missing."""
        got = self._paths.get(key)
        if got is None:
            got = self._paths[key] = self._stack.enter_context(
                self.store.local_file(key, self.scratch_dir)
            )
        return got

    def paths(self, keys: list[str]) -> list[Path]:
        return [self.path(k) for k in keys]

    def close(self) -> None:
        """Delete the scratch copies (a local store's own files stay)."""
        self._paths.clear()
        self._stack.close()

    def __enter__(self) -> LocalCopies:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
