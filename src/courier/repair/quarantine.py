"""Quarantined messages in the bucket store, and replaying them once the cause is fixed.

The writer quarantines a message it cannot decode after ``max_deliveries`` to
``_quarantine/<Type>/<seq:020d>.json`` in the bucket store (a local directory, S3
or GCS; format version 1: the stream sequence, ``published_at``,
``num_delivered``, the ``reason``, the message ``headers`` and ``body_base64``)
and terminates it in the stream. After a fix (a writer that now decodes it, or a
corrected body written into the record), ``courier repair replay-quarantine
TYPE`` replays each record:

1. read the record;
2. post it to the gateway (``POST /v1/admin/republish/<Type>``), which
   publishes the body with its headers under the JetStream message id
   ``replay.<Type>.<seq>`` and answers only after the publish ack;
3. only after that 2xx, file the record under ``_quarantine/<Type>/_replayed/``:
   an atomic put of the copy, then the delete of the original (no store renames
   atomically; locally the put is fsynced before the delete).

A crash between 2 and 3, or between the put and the delete of 3, leaves the
record in place, so the next run publishes it again. Inside the stream's
duplicate window (``nats.duplicate_window_secs``) the server drops the repeated
message id (the answer says ``duplicate``); after it, the message is stored twice
and the closer drops the repeated event ids against every closed bucket within
the dedup horizon (``closer.dedup_horizon_secs``, DESIGN §6 step 3).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from courier.errors import ObjectNotFoundError, StorageError
from courier.storage import Layout

REPLAYED_DIR = "_replayed"


@dataclass(frozen=True, slots=True)
class QuarantinedMessage:
    """One quarantine record of the writer."""

    key: str  # in the bucket store
    event_type: str
    stream_seq: int
    reason: str
    headers: dict[str, str]
    body: bytes

    def republish_request(self) -> dict[str, Any]:
        """The body of ``POST /v1/admin/republish/<Type>`` for this message."""
        return {
            "stream_seq": self.stream_seq,
            "headers": self.headers,
            "body_base64": base64.b64encode(self.body).decode(),
        }


def read_quarantined(layout: Layout, key: str) -> QuarantinedMessage:
    """Step 1: one record; StorageError when it is unreadable or not a record."""
    try:
        doc = json.loads(layout.store.get(key))
        if doc.get("format_version") != 1:
            raise ValueError(f"unknown format_version {doc.get('format_version')!r}")
        headers = doc.get("headers") or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise ValueError("headers must map strings to strings")
        return QuarantinedMessage(
            key=key,
            event_type=str(doc["event_type"]),
            stream_seq=int(doc["stream_seq"]),
            reason=str(doc.get("reason") or ""),
            headers=headers,
            body=base64.b64decode(doc["body_base64"], validate=True),
        )
    except (
        ObjectNotFoundError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        binascii.Error,
    ) as exc:
        raise StorageError(
            f"quarantine record {layout.where(key)} cannot be read ({exc}); it is left in place"
        ) from exc


def quarantined_keys(layout: Layout, event_type: str) -> list[str]:
    """The store keys of ``event_type``'s records not yet replayed, by stream sequence."""
    return [o.key for o in layout.objects_in(layout.quarantine_prefix(event_type), ".json")]


def mark_replayed(layout: Layout, record: QuarantinedMessage) -> str:
    """Step 3: file the record under ``_replayed/``; returns its new key.

    The copy is written (atomically) before the original is deleted, so a crash
    in between leaves the record to be replayed again, never lost.
    """
    head, _, name = record.key.rpartition("/")
    dst = f"{head}/{REPLAYED_DIR}/{name}"
    layout.store.put(dst, layout.store.get(record.key))
    layout.store.delete(record.key)
    return dst
