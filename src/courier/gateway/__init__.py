"""The Event Service: an ASGI app that validates, stamps and durably stores event batches.

Public surface: :func:`create_app` and :func:`serve`; the :class:`EventSink`
seam with its JetStream (:class:`NatsSink`) and in-memory (:class:`MemorySink`)
implementations; :class:`Coalescer`, the group commit of stored messages.
"""

from courier.gateway.app import create_app
from courier.gateway.prefork import serve
from courier.gateway.publisher import (
    EVENTS_HEADER,
    SCHEMA_VERSION_HEADER,
    Coalescer,
    EventSink,
    MemorySink,
    NatsSink,
    SinkMessage,
    message_id,
)

__all__ = [
    "EVENTS_HEADER",
    "SCHEMA_VERSION_HEADER",
    "Coalescer",
    "EventSink",
    "MemorySink",
    "NatsSink",
    "SinkMessage",
    "create_app",
    "message_id",
    "serve",
]
