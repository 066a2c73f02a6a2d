"""One exception hierarchy for Courier.

Library exceptions (nats, pyarrow, OS) are translated into these at the
boundary where they happen, with ``raise ... from exc``. Messages say what
happened, to what, and what happens next.
"""

from __future__ import annotations


class CourierError(Exception):
    """Base of every error Courier raises on purpose."""


class ConfigError(CourierError):
    """Settings or files on disk are invalid; the process refuses to start."""


class SchemaError(CourierError):
    """An Avro schema or type settings document is invalid."""


class IncompatibleSchemaError(SchemaError):
    """A new schema version is not backward compatible with the current one."""


class UnknownEventTypeError(CourierError):
    """The event type is not registered."""


class TransportError(CourierError):
    """The transport (NATS JetStream) failed; callers should retry later."""


class TransportUnavailableError(TransportError):
    """The transport is not reachable right now (not connected, no responders)."""


class PublishOutcomeUnknownError(TransportError):
    """A publish timed out: the message may or may not have been stored.

    Safe to retry: ids and Nats-Msg-Id make the retry idempotent downstream.
    """


class StreamFullError(TransportError):
    """The stream or the NATS store is full and refused the message: nothing was stored.

    discard=new: what is already stored is never dropped to make room.
    """


class ProvisioningError(TransportError):
    """Streams, consumers or KV buckets are missing or configured differently."""


class PortInUseError(CourierError):
    """A server could not bind its port because another process holds it."""


class StorageError(CourierError):
    """Reading or writing bucket, staging or checkpoint files failed."""


class ManifestError(StorageError):
    """A `_SUCCESS` manifest is missing, unreadable or of an unknown format."""


class ObjectNotFoundError(StorageError):
    """An object asked for by key does not exist in the bucket store."""


class BucketNotClosedError(CourierError):
    """A bucket that was asked for is not closed (yet)."""


class ConcurrentUpdateError(CourierError):
    """A compare-and-set on a KV entry or a stored object lost: someone else changed it first."""


class KeyExistsError(ConcurrentUpdateError):
    """A KV create found the key already present."""


class ObjectExistsError(ConcurrentUpdateError):
    """A create-only put found the object already present; nothing was written.

    Not a storage failure to retry: it is the store's answer that someone (maybe
    this process, before a lost response) created the object first.
    """


class StaleVersionError(ConcurrentUpdateError):
    """A compare-and-swap put lost: the object changed (or vanished) since its version was read."""


class StoredBodyError(CourierError):
    """A stored message body does not decode with the schema version it names."""


class UndecodableError(CourierError):
    """Stored messages cannot be decoded with their type's schema.

    The writer then decodes them one by one and quarantines a bad one after a
    few deliveries; a re-close skips it with a warning.
    """


class RepairRefusedError(CourierError):
    """A repair cannot be done as asked (the data it needs is gone, or it would skip
    unacknowledged messages); nothing was changed."""


class GatewayCallError(CourierError):
    """A client's call to the gateway failed (unreachable) or was refused (non-2xx).

    ``status`` is the HTTP status of the answer, None when none arrived.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RequestError(CourierError):
    """A gateway request is unacceptable as a whole; nothing in it was accepted.

    ``status`` is the HTTP status the gateway answers with. Retrying the same
    request will fail the same way: the client must fix it.
    """

    status = 400


class MalformedRequestError(RequestError):
    """The body is not valid JSON / NDJSON, is nested too deeply or has a bad envelope."""

    status = 400


class RequestTooLargeError(RequestError):
    """The body (compressed or decompressed) or the number of events exceeds a limit."""

    status = 413


class UnsupportedMediaError(RequestError):
    """The Content-Type or Content-Encoding is not one the gateway accepts."""

    status = 415


class RequestTimeoutError(RequestError):
    """The request body did not arrive within the body-read deadline (slow client)."""

    status = 408


class UnauthorizedError(RequestError):
    """No API key, or one the gateway does not know; nothing in the request was accepted."""

    status = 401


class ForbiddenError(RequestError):
    """The API key is valid but may not do this (send an event type, use an admin route)."""

    status = 403


class RateLimitedError(RequestError):
    """The API key sent more events than its rate limit allows; retry after ``retry_after_secs``."""

    status = 429

    def __init__(self, message: str, retry_after_secs: int) -> None:
        super().__init__(message)
        self.retry_after_secs = retry_after_secs


class NotFoundError(RequestError):
    """The request names something that does not exist (an unknown event type)."""

    status = 404


class ConflictError(RequestError):
    """The request conflicts with the current state (an incompatible schema change)."""

    status = 409


class TableError(CourierError):
    """An Iceberg table commit failed (catalog down, concurrent commit); retried with backoff."""


class TableMappingError(TableError):
    """A bucket file's columns would not read back as the table's columns (wrong field ids,
    a name the table's name mapping lacks): the commit is refused, never made."""


class TableSchemaError(TableError):
    """An event type's schema has a column Iceberg tables (format v2, as pyiceberg writes
    them) cannot hold (``timestamp[ns]``, ``time32[ms]``, ``null``): that type gets no
    table; its buckets close as always."""
