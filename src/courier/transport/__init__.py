"""Transport: the only package that imports ``nats``.

Public surface: :class:`Transport` (connect, publish, pull, ack, progress,
KV), provisioning and verification, and the embedded server.
"""

from courier.transport.client import (
    ConsumerProgress,
    Delivery,
    MessageLike,
    NatsKeyValue,
    PublishResult,
    PullConsumer,
    StoredMessage,
    Transport,
)
from courier.transport.kv import KeyValue, KVEntry, MemoryKeyValue
from courier.transport.names import (
    AUDIT_CONSUMER,
    AUDIT_KV,
    CATALOG_KV,
    REPAIRS_KV,
    SCHEMAS_KV,
    WRITER_CONSUMER,
    closed_subject,
    events_subject,
    stream_name,
)
from courier.transport.provision import provision_base, provision_type, verify_type
from courier.transport.repoint import Repointed, repoint_writer
from courier.transport.server import EmbeddedNats, free_port, nats_server_binary

__all__ = [
    "AUDIT_CONSUMER",
    "AUDIT_KV",
    "CATALOG_KV",
    "REPAIRS_KV",
    "SCHEMAS_KV",
    "WRITER_CONSUMER",
    "ConsumerProgress",
    "Delivery",
    "EmbeddedNats",
    "KVEntry",
    "KeyValue",
    "MemoryKeyValue",
    "MessageLike",
    "NatsKeyValue",
    "PublishResult",
    "PullConsumer",
    "Repointed",
    "StoredMessage",
    "Transport",
    "closed_subject",
    "events_subject",
    "free_port",
    "nats_server_binary",
    "provision_base",
    "provision_type",
    "repoint_writer",
    "stream_name",
    "verify_type",
]
