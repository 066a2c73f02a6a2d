"""The bucket store: the one seam between Courier and where buckets live.

Every backend (local directory, S3, GCS, in-memory) gives the same guarantees,
and the close protocol (DESIGN §6) relies on each of them:

- ``put``/``put_file`` are atomic whole-object writes: a reader sees the old
  object, the new one, or none, never a part (staging writes, final parts);
- ``create`` is create-only: exactly one of many racing creators wins, the
  others get :class:`~courier.errors.ObjectExistsError` and nothing is
  overwritten (``_SUCCESS``, written last, at most once);
- ``replace`` is a compare-and-swap on the version token that ``create``,
  ``replace`` or ``get_versioned`` returned: a stale token gets
  :class:`~courier.errors.StaleVersionError` (re-close swaps the manifest);
- a ``list_objects`` after a successful put finds the object (the closer lists
  staging after writers acked it).

Keys are ``/``-separated relative paths; no segment may be empty or start
with ``.`` (the local store keeps its temp and lock files under such names).
Version tokens are opaque strings and may be derived from the content (S3
ETags, SHA-256 on a local directory): two writes of identical bytes may share
one, which a compare-and-swap treats as "unchanged".

Library errors become :mod:`courier.errors` at each backend's boundary:
:class:`~courier.errors.StorageError` (retry later) for failures,
:class:`~courier.errors.ObjectNotFoundError` for a missing key, and the two
:class:`~courier.errors.ConcurrentUpdateError` answers above, which are not
failures and must not be retried blindly.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from courier.errors import ConfigError


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its key (relative to the store's root) and size."""

    key: str
    size_bytes: int


@dataclass(frozen=True)
class Versioned:
    """An object's bytes and the version token to pass to ``replace``."""

    data: bytes
    version: str


@runtime_checkable
class BucketStore(Protocol):
    """Where buckets, staging files, quarantine and ``_invalid`` live; see the module docstring."""

    @property
    def url(self) -> str:
        """The store's URL (``file:///...``, ``s3://bucket/prefix``, ...), never credentials."""
        ...

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` as ``key`` atomically, replacing any object there."""
        ...

    def put_file(self, key: str, path: Path) -> None:
        """Upload the local file ``path`` as ``key`` atomically; ``path`` is left in place."""
        ...

    def create(self, key: str, data: bytes) -> str:
        """Write ``key`` only if it does not exist; return its version.

        ObjectExistsError when it exists (nothing written).
        """
        ...

    def replace(self, key: str, data: bytes, *, version: str) -> str:
        """Write ``key`` only if its current version is ``version``; return the new version.

        StaleVersionError when the object changed or no longer exists (nothing written).
        """
        ...

    def get(self, key: str) -> bytes:
        """The bytes of ``key``; ObjectNotFoundError when it does not exist."""
        ...

    def get_versioned(self, key: str) -> Versioned:
        """The bytes of ``key`` with its version token; ObjectNotFoundError when missing."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """What ``key`` is, or None when it does not exist."""
        ...

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Every object under the directory ``prefix`` ("" = all), recursively, sorted by key."""
        ...

    def list_dirs(self, prefix: str) -> list[str]:
        """Names of the directories directly under ``prefix``, sorted.

        A local store may also list directories that hold no object any more.
        """
        ...

    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing object is not an error (close step 7 re-runs)."""
        ...

    def local_file(self, key: str, scratch_dir: Path) -> AbstractContextManager[Path]:
        """A local path holding ``key``'s bytes inside the ``with`` block (for pyarrow, DuckDB).

        The file itself on a local store, a scratch copy in ``scratch_dir``
        elsewhere (deleted on exit). ObjectNotFoundError when ``key`` is missing.
        """
        ...


def check_key(key: str) -> str:
    """``key`` if it is a valid object key; ValueError (a bug in the caller) if not."""
    parts = key.split("/")
    if not key or any(not p or p.startswith(".") for p in parts):
        raise ValueError(
            f"invalid object key {key!r}: segments must be non-empty and not start with '.'"
        )
    return key


def check_prefix(prefix: str) -> str:
    """``prefix`` without a trailing ``/`` ("" for the whole store); ValueError if invalid."""
    stripped = prefix.rstrip("/")
    return check_key(stripped) if stripped else ""


def join_key(prefix: str, key: str) -> str:
    """``prefix/key``; either part may be empty."""
    return f"{prefix}/{key}" if prefix and key else prefix or key


def open_store(url: str | Path, *, retry_deadline_secs: float | None = None) -> BucketStore:
    """The bucket store for ``url``: a path or ``file://`` URL, ``s3://bucket/prefix``, ``gs://bucket/prefix``.

    S3 and GCS need the ``s3`` / ``gcs`` extras and take their endpoint and
    credentials from the providers' usual environment variables and files
    (``AWS_*`` and ``~/.aws``; ``GOOGLE_APPLICATION_CREDENTIALS``,
    ``STORAGE_EMULATOR_HOST`` and gcloud's application-default credentials).
    ``retry_deadline_secs`` bounds the client's retries of each S3/GCS call (its
    own default, minutes, when None): a writer should give up before its
    messages' ``ack_wait`` runs out. ConfigError for an unknown scheme or a
    missing extra. Nothing is contacted yet.
    """
    text = str(url)
    scheme, sep, rest = text.partition("://")
    if not sep:
        from courier.storage.store.local import LocalStore

        return LocalStore(Path(text))
    scheme = scheme.lower()
    if scheme == "file":
        from courier.storage.store.local import LocalStore

        if not rest.startswith("/"):
            raise ConfigError(f"store URL {text!r}: a file:// URL needs an absolute path")
        return LocalStore(Path(rest))
    if scheme in ("s3", "gs"):
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ConfigError(f"store URL {text!r} names no bucket; use {scheme}://bucket/prefix")
        try:
            prefix = check_prefix(prefix)
        except ValueError as exc:
            raise ConfigError(f"store URL {text!r} has an invalid prefix: {exc}") from exc
        if scheme == "s3":
            return _open_s3(text, bucket, prefix, retry_deadline_secs)
        return _open_gcs(text, bucket, prefix, retry_deadline_secs)
    raise ConfigError(
        f"store URL {text!r} has an unknown scheme {scheme!r}; use a path, file://, s3:// or gs://"
    )


def _open_s3(url: str, bucket: str, prefix: str, deadline_secs: float | None) -> BucketStore:
    try:
        from courier.storage.store.s3 import S3BucketStore
    except ImportError as exc:
        raise ConfigError(
            f"store URL {url!r} needs the S3 client: pip install 'courier[s3]' ({exc})"
        ) from exc
    return S3BucketStore(bucket, prefix, retry_deadline_secs=deadline_secs)


def _open_gcs(url: str, bucket: str, prefix: str, deadline_secs: float | None) -> BucketStore:
    try:
        from courier.storage.store.gcs import GcsBucketStore
    except ImportError as exc:
        raise ConfigError(
            f"store URL {url!r} needs the GCS client: pip install 'courier[gcs]' ({exc})"
        ) from exc
    return GcsBucketStore(bucket, prefix, retry_deadline_secs=deadline_secs)
