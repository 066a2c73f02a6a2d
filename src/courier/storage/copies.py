"""Local paths of store objects for one job (a close, a re-close, an audit scan).

DuckDB and pyarrow read local files; an object store has none. :class:`LocalCopies`
hands out :meth:`BucketStore.local_file` paths and keeps each one until the job
ends: on a local store the object's own file (nothing is copied), elsewhere a
scratch copy in the process's own scratch directory, deleted when the job ends
(also when it fails). Each key is fetched at most once per job.

A bucket's inputs are many small objects (a staging object per writer flush, an
id index per closed bucket in the horizon), and an object store answers each GET
after a round trip: :meth:`LocalCopies.fetch` downloads them in parallel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from courier.errors import ObjectNotFoundError
from courier.storage.store import BucketStore, LocalStore

#: Downloads in flight at once; each is a blocking call in its own thread.
_PARALLEL_DOWNLOADS = 16


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

    def fetch(self, keys: Iterable[str]) -> dict[str, Path]:
        """Local files of ``keys``, downloaded in parallel; keys that do not exist are left
        out (the caller decides what a missing one means). Any other failure raises, and
        what was downloaded is still deleted when the job ends."""
        keys = list(dict.fromkeys(keys))
        wanted = [k for k in keys if k not in self._paths]
        if len(wanted) <= 1 or isinstance(self.store, LocalStore):
            for k in wanted:
                with contextlib.suppress(ObjectNotFoundError):
                    self.path(k)
        else:
            managers = {k: self.store.local_file(k, self.scratch_dir) for k in wanted}
            failure: BaseException | None = None
            with ThreadPoolExecutor(min(_PARALLEL_DOWNLOADS, len(wanted))) as pool:
                futures = {k: pool.submit(cm.__enter__) for k, cm in managers.items()}
                for k, future in futures.items():
                    try:
                        self._paths[k] = future.result()
                    except ObjectNotFoundError:
                        continue
                    except BaseException as exc:
                        failure = failure or exc
                        continue
                    self._stack.push(managers[k].__exit__)
            if failure is not None:
                raise failure
        return {k: self._paths[k] for k in keys if k in self._paths}

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
