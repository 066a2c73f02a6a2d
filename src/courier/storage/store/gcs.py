"""The bucket store on Google Cloud Storage, via google-cloud-storage (the JSON API).

How each guarantee of :mod:`courier.storage.store.base` is kept:

- atomic put: a GCS object becomes visible only when its upload (multipart or
  resumable) is finalized;
- create-only: ``ifGenerationMatch=0``;
- compare-and-swap: ``ifGenerationMatch=<generation>``; the version token is
  the object's generation;
- list after put: GCS listings are strongly consistent.

Why not obstore, as for S3: it speaks GCS's XML API, which fake-gcs-server
cannot write (fake-gcs-server#331), so it could not be tested against a real
emulator. gcsfs needs ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` set before
import to avoid a ~60 s gRPC probe per call.

Credentials come from Application Default Credentials
(``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's files, the metadata server);
``STORAGE_EMULATOR_HOST`` points the client at an emulator with anonymous
credentials. The client is made on first use, so opening a store contacts
nothing. Credentials are never logged or put in messages.

A conditional upload that the client retried after a lost response can answer
"already exists" (or "stale") for our own write: callers that must tell the
two apart compare the stored bytes with what they meant to write.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from courier.errors import (
    ConfigError,
    ObjectExistsError,
    ObjectNotFoundError,
    StaleVersionError,
    StorageError,
)
from courier.storage.store.base import ObjectInfo, Versioned, check_key, check_prefix, join_key

_CONTENT_TYPE = "application/octet-stream"
#: Library errors that mean "the store failed"; anything else is a bug and passes unchanged.
#: (requests' errors, raised for connection failures, are OSErrors.)
_STORE_ERRORS = (api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError, OSError)


class GcsBucketStore:
    """A :class:`~courier.storage.store.base.BucketStore` on ``gs://bucket/prefix``."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        retry_deadline_secs: float | None = None,
        client: storage.Client | None = None,
    ) -> None:
        """``retry_deadline_secs`` bounds each call's retries (the client's default when None)."""
        self.bucket_name = bucket
        self.prefix = check_prefix(prefix)
        self._retry = (
            DEFAULT_RETRY
            if retry_deadline_secs is None
            else DEFAULT_RETRY.with_timeout(retry_deadline_secs)
        )
        self._client = client
        self._bucket: storage.Bucket | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"gs://{join_key(self.bucket_name, self.prefix)}"

    def __repr__(self) -> str:
        return f"GcsBucketStore({self.url!r})"

    # -- writes --------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        blob = self._blob(key)
        try:
            blob.upload_from_string(data, content_type=_CONTENT_TYPE, retry=self._retry)
        except _STORE_ERRORS as exc:
            self._fail(exc, "write", key, "it may or may not have been written; retry later")

    def put_file(self, key: str, path: Path) -> None:
        blob = self._blob(key)
        try:
            blob.upload_from_filename(str(path), content_type=_CONTENT_TYPE, retry=self._retry)
        except _STORE_ERRORS as exc:
            self._fail(
                exc, f"upload {path} to", key, "it may or may not have been written; retry later"
            )

    def create(self, key: str, data: bytes) -> str:
        blob = self._blob(key)
        try:
            blob.upload_from_string(
                data, content_type=_CONTENT_TYPE, if_generation_match=0, retry=self._retry
            )
        except api_exceptions.PreconditionFailed:
            raise ObjectExistsError(
                f"{self._where(key)} already exists; it was not overwritten"
            ) from None
        except _STORE_ERRORS as exc:
            self._fail(exc, "create", key, "it may or may not exist now; read it to find out")
        return str(blob.generation)

    def replace(self, key: str, data: bytes, *, version: str) -> str:
        blob = self._blob(key)
        stale = StaleVersionError(
            f"{self._where(key)} has changed or no longer exists since generation {version} "
            "was read; nothing was written (read it again and decide anew)"
        )
        try:
            generation = int(version)
        except ValueError:
            raise stale from None  # not a token this store handed out
        try:
            blob.upload_from_string(
                data, content_type=_CONTENT_TYPE, if_generation_match=generation, retry=self._retry
            )
        except (api_exceptions.PreconditionFailed, api_exceptions.NotFound):
            raise stale from None
        except _STORE_ERRORS as exc:
            self._fail(exc, "replace", key, "it may hold either version; read it to find out")
        return str(blob.generation)

    def delete(self, key: str) -> None:
        blob = self._blob(key)
        try:
            blob.delete(retry=self._retry)
        except api_exceptions.NotFound:
            return
        except _STORE_ERRORS as exc:
            self._fail(exc, "delete", key, "it may still exist")

    # -- reads ---------------------------------------------------------------

    def get(self, key: str) -> bytes:
        return self.get_versioned(key).data

    def get_versioned(self, key: str) -> Versioned:
        blob = self._blob(key)
        try:
            data = blob.download_as_bytes(retry=self._retry)
        except api_exceptions.NotFound:
            raise ObjectNotFoundError(f"{self._where(key)} does not exist") from None
        except _STORE_ERRORS as exc:
            self._fail(exc, "read", key, "nothing was read")
        # The generation comes from the same response as the bytes.
        return Versioned(data, str(blob.generation))

    def head(self, key: str) -> ObjectInfo | None:
        try:
            blob = self._get_bucket().get_blob(self._name(key), retry=self._retry)
        except api_exceptions.NotFound:
            return None
        except _STORE_ERRORS as exc:
            self._fail(exc, "look up", key, "its state is unknown")
        return None if blob is None else ObjectInfo(key, int(blob.size or 0))

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        prefix = check_prefix(prefix)
        start = self._dir_prefix(prefix)
        try:
            blobs = list(self._get_bucket().list_blobs(prefix=start, retry=self._retry))
        except _STORE_ERRORS as exc:
            self._fail(exc, "list", prefix, "nothing was listed")
        cut = len(self._dir_prefix(""))
        return sorted(
            (ObjectInfo(b.name[cut:], int(b.size or 0)) for b in blobs), key=lambda o: o.key
        )

    def list_dirs(self, prefix: str) -> list[str]:
        prefix = check_prefix(prefix)
        try:
            pages: Any = self._get_bucket().list_blobs(
                prefix=self._dir_prefix(prefix), delimiter="/", retry=self._retry
            )
            for _ in pages:  # prefixes fill in as the pages are read
                pass
        except _STORE_ERRORS as exc:
            self._fail(exc, "list", prefix, "nothing was listed")
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in pages.prefixes)

    @contextlib.contextmanager
    def local_file(self, key: str, scratch_dir: Path) -> Iterator[Path]:
        blob = self._blob(key)
        scratch = Path(scratch_dir)
        path = scratch / f".dl-{secrets.token_hex(8)}-{key.rsplit('/', 1)[-1]}"
        try:
            scratch.mkdir(parents=True, exist_ok=True)
            blob.download_to_filename(str(path), retry=self._retry)
        except api_exceptions.NotFound:
            path.unlink(missing_ok=True)
            raise ObjectNotFoundError(f"{self._where(key)} does not exist") from None
        except _STORE_ERRORS as exc:
            path.unlink(missing_ok=True)
            self._fail(exc, f"download to {scratch}", key, "nothing was kept")
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    # -- helpers -------------------------------------------------------------

    def _get_bucket(self) -> storage.Bucket:
        with self._lock:
            if self._bucket is None:
                try:
                    client = self._client or storage.Client()
                except auth_exceptions.DefaultCredentialsError as exc:
                    raise ConfigError(
                        f"no Google credentials for {self.url}: set GOOGLE_APPLICATION_CREDENTIALS "
                        f"or run gcloud auth application-default login ({exc})"
                    ) from exc
                self._bucket = client.bucket(self.bucket_name)
            return self._bucket

    def _name(self, key: str) -> str:
        return join_key(self.prefix, check_key(key))

    def _blob(self, key: str) -> storage.Blob:
        return self._get_bucket().blob(self._name(key))

    def _dir_prefix(self, prefix: str) -> str:
        full = join_key(self.prefix, prefix)
        return f"{full}/" if full else ""

    def _where(self, key: str) -> str:
        return f"gs://{join_key(join_key(self.bucket_name, self.prefix), key)}"

    def _fail(self, exc: BaseException, action: str, key: str, outcome: str) -> NoReturn:
        hint = ""
        if isinstance(exc, api_exceptions.Forbidden | api_exceptions.Unauthorized):
            hint = " (check the Google credentials and the bucket's IAM policy)"
        cause = str(exc).split("\n", 1)[0]
        if len(cause) > 300:
            cause = cause[:300] + "..."
        raise StorageError(
            f"could not {action} {self._where(key)}: {cause}{hint}; {outcome}"
        ) from exc
