"""The bucket store on S3 (or an S3-compatible store that enforces conditional writes), via obstore.

How each guarantee of :mod:`courier.storage.store.base` is kept:

- atomic put: one PUT request (S3 makes an object visible only when its
  upload completes); files above :data:`MULTIPART_ABOVE_BYTES` use a multipart
  upload, which is just as invisible until it completes;
- create-only: ``If-None-Match: *`` (obstore ``mode="create"``);
- compare-and-swap: ``If-Match: <etag>``; the version token is the ETag;
- list after put: S3 listings are strongly consistent.

The endpoint, region and credentials come from the usual ``AWS_*`` environment
variables (``AWS_ENDPOINT_URL``, ``AWS_ALLOW_HTTP=true`` for an emulator,
``AWS_ACCESS_KEY_ID``, web identity, ECS and EC2 metadata); when no key is in
the environment but ``AWS_PROFILE`` or an ``~/.aws`` file is there, boto3's
credential chain reads it. Credentials are never logged or put in messages.

A conditional PUT whose response was lost and which obstore then retried can
answer "already exists" (or "stale") for our own write: callers that must
tell the two apart compare the stored bytes with what they meant to write.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from courier.errors import (
    ConfigError,
    ObjectExistsError,
    ObjectNotFoundError,
    StaleVersionError,
    StorageError,
)
from courier.storage.store.base import ObjectInfo, Versioned, check_key, check_prefix, join_key

if TYPE_CHECKING:
    from obstore.store import RetryConfig, S3CredentialProvider

#: Files larger than this are uploaded in parts (still invisible until complete).
MULTIPART_ABOVE_BYTES = 512 * 1024 * 1024
_PART_BYTES = 64 * 1024 * 1024
_DOWNLOAD_CHUNK_BYTES = 8 * 1024 * 1024


class S3BucketStore:
    """A :class:`~courier.storage.store.base.BucketStore` on ``s3://bucket/prefix``."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        retry_deadline_secs: float | None = None,
        **config: Any,
    ) -> None:
        """``retry_deadline_secs`` bounds each call's retries (obstore's 180 s when None);
        ``config`` holds obstore ``S3Config`` keys that override the environment (tests)."""
        self.bucket = bucket
        self.prefix = check_prefix(prefix)
        retry: RetryConfig | None = None
        if retry_deadline_secs is not None:
            retry = {"retry_timeout": timedelta(seconds=retry_deadline_secs)}
        self._store = S3Store(
            bucket,
            prefix=self.prefix or None,
            credential_provider=_credential_provider(),
            retry_config=retry,
            **config,
        )

    @property
    def url(self) -> str:
        return f"s3://{join_key(self.bucket, self.prefix)}"

    def __repr__(self) -> str:
        return f"S3BucketStore({self.url!r})"

    # -- writes --------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        try:
            obstore.put(self._store, check_key(key), data, use_multipart=False)
        except (BaseError, OSError) as exc:
            self._fail(exc, "write", key, "it may or may not have been written; retry later")

    def put_file(self, key: str, path: Path) -> None:
        try:
            size = os.path.getsize(path)
            obstore.put(
                self._store,
                check_key(key),
                Path(path),
                use_multipart=size > MULTIPART_ABOVE_BYTES,
                chunk_size=_PART_BYTES,
            )
        except (BaseError, OSError) as exc:
            self._fail(
                exc, f"upload {path} to", key, "it may or may not have been written; retry later"
            )

    def create(self, key: str, data: bytes) -> str:
        try:
            result = obstore.put(self._store, check_key(key), data, mode="create")
        except (AlreadyExistsError, PreconditionError):
            raise ObjectExistsError(
                f"{self._where(key)} already exists; it was not overwritten"
            ) from None
        except (BaseError, OSError) as exc:
            self._fail(exc, "create", key, "it may or may not exist now; read it to find out")
        return _etag(result.get("e_tag"), self._where(key))

    def replace(self, key: str, data: bytes, *, version: str) -> str:
        try:
            result = obstore.put(self._store, check_key(key), data, mode={"e_tag": version})
        except (PreconditionError, FileNotFoundError) as exc:
            if "NoSuchBucket" in str(exc):
                self._fail(exc, "replace", key, "the bucket does not exist (create it first)")
            raise StaleVersionError(
                f"{self._where(key)} has changed or no longer exists since version {version} "
                "was read; nothing was written (read it again and decide anew)"
            ) from None
        except (BaseError, OSError) as exc:
            self._fail(exc, "replace", key, "it may hold either version; read it to find out")
        return _etag(result.get("e_tag"), self._where(key))

    def delete(self, key: str) -> None:
        try:
            obstore.delete(self._store, check_key(key))
        except FileNotFoundError:
            return
        except (BaseError, OSError) as exc:
            self._fail(exc, "delete", key, "it may still exist")

    # -- reads ---------------------------------------------------------------

    def get(self, key: str) -> bytes:
        return self.get_versioned(key).data

    def get_versioned(self, key: str) -> Versioned:
        try:
            result = obstore.get(self._store, check_key(key))
            data = bytes(result.bytes())
        except FileNotFoundError as exc:
            self._not_found(exc, key)
        except (BaseError, OSError) as exc:
            self._fail(exc, "read", key, "nothing was read")
        return Versioned(data, _etag(result.meta.get("e_tag"), self._where(key)))

    def head(self, key: str) -> ObjectInfo | None:
        try:
            meta = obstore.head(self._store, check_key(key))
        except FileNotFoundError:
            return None
        except (BaseError, OSError) as exc:
            self._fail(exc, "look up", key, "its state is unknown")
        return ObjectInfo(key, int(meta["size"]))

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        prefix = check_prefix(prefix)
        try:
            metas = obstore.list(self._store, prefix or None).collect()
        except (BaseError, OSError) as exc:
            self._fail(exc, "list", prefix, "nothing was listed")
        return sorted((ObjectInfo(m["path"], int(m["size"])) for m in metas), key=lambda o: o.key)

    def list_dirs(self, prefix: str) -> list[str]:
        prefix = check_prefix(prefix)
        try:
            found = obstore.list_with_delimiter(self._store, prefix or None)
        except (BaseError, OSError) as exc:
            self._fail(exc, "list", prefix, "nothing was listed")
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in found["common_prefixes"])

    @contextlib.contextmanager
    def local_file(self, key: str, scratch_dir: Path) -> Iterator[Path]:
        scratch = Path(scratch_dir)
        path = scratch / f".dl-{secrets.token_hex(8)}-{check_key(key).rsplit('/', 1)[-1]}"
        try:
            scratch.mkdir(parents=True, exist_ok=True)
            result = obstore.get(self._store, key)
            with open(path, "wb") as f:
                for chunk in result.stream(min_chunk_size=_DOWNLOAD_CHUNK_BYTES):
                    f.write(chunk)
        except FileNotFoundError as exc:
            path.unlink(missing_ok=True)
            self._not_found(exc, key)
        except (BaseError, OSError) as exc:
            path.unlink(missing_ok=True)
            self._fail(exc, f"download to {scratch}", key, "nothing was kept")
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    # -- helpers -------------------------------------------------------------

    def _where(self, key: str) -> str:
        return f"s3://{join_key(join_key(self.bucket, self.prefix), key)}"

    def _not_found(self, exc: FileNotFoundError, key: str) -> NoReturn:
        if "NoSuchBucket" in str(exc):
            self._fail(exc, "read", key, "the bucket does not exist (create it first)")
        raise ObjectNotFoundError(f"{self._where(key)} does not exist") from None

    def _fail(self, exc: BaseException, action: str, key: str, outcome: str) -> NoReturn:
        hint = ""
        if isinstance(exc, PermissionDeniedError | UnauthenticatedError | PermissionError):
            hint = " (check the AWS credentials and the bucket's policy)"
        raise StorageError(
            f"could not {action} {self._where(key)}: {short_cause(exc)}{hint}; {outcome}"
        ) from exc


def _etag(etag: str | None, where: str) -> str:
    if not etag:
        raise StorageError(f"{where}: the store returned no ETag, so it cannot compare-and-swap")
    return etag


def _credential_provider() -> S3CredentialProvider | None:
    """boto3's chain when credentials live in files (profiles); obstore's own chain otherwise."""
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        return None
    files = [
        os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
        os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"),
    ]
    if not os.environ.get("AWS_PROFILE") and not any(Path(f).expanduser().is_file() for f in files):
        return None
    try:
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError as exc:
        raise ConfigError(
            "S3 credentials are in AWS profile files, which need boto3: "
            f"pip install 'courier[s3]' ({exc})"
        ) from exc
    return Boto3CredentialProvider()


_XML_CODE = re.compile(r"<Code>([^<]+)</Code>")


def short_cause(exc: BaseException) -> str:
    """The first line of a client error, without the response body; S3's error code kept."""
    text = str(exc) or type(exc).__name__
    code = _XML_CODE.search(text)
    first = text.split("\n", 1)[0].split("<?xml", 1)[0].rstrip(" :")
    if len(first) > 300:
        first = first[:300] + "..."
    return f"{first} ({code.group(1)})" if code else first
