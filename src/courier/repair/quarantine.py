"""Quarantined messages on disk, and replaying them once the cause is fixed.

The writer quarantines a message it cannot decode after ``max_deliveries`` to
``<data_dir>/_quarantine/<Type>/<seq:020d>.json`` (format version 1: the
stream sequence, ``published_at``, ``num_delivered``, the ``reason``, the
message ``headers`` and ``body_base64``) and terminates it in the stream.
After a fix (a writer that now decodes it, or a corrected body written into
the record), ``courier repair replay-quarantine TYPE`` replays each record:

1. read the record;
2. post it to the gateway (``POST /v1/admin/republish/<Type>``), which
   publishes the body with its headers under the JetStream message id
   ``replay.<Type>.<seq>`` and answers only after the publish ack;
3. only after that 2xx, move the file to ``_quarantine/<Type>/_replayed/``
   (a rename, then both directories fsynced).

A crash between 2 and 3 leaves the file in place, so the next run publishes
it again. Inside the stream's duplicate window (``nats.duplicate_window_secs``)
the server drops the repeated message id (the answer says ``duplicate``);
after it, the message is stored twice and the closer drops the repeated event
ids when both copies land in the same bucket or in adjacent ones (DESIGN §6
step 3). Two replays further apart than one bucket would repeat the events in
two buckets: finish an interrupted replay promptly.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from courier.errors import StorageError
from courier.storage import Layout, move_durable

REPLAYED_DIR = "_replayed"


@dataclass(frozen=True, slots=True)
class QuarantinedMessage:
    """One quarantine record of the writer."""

    path: Path
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


def read_quarantined(path: Path) -> QuarantinedMessage:
    """Step 1: one record; StorageError when it is unreadable or not a record."""
    try:
        doc = json.loads(path.read_bytes())
        if doc.get("format_version") != 1:
            raise ValueError(f"unknown format_version {doc.get('format_version')!r}")
        headers = doc.get("headers") or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise ValueError("headers must map strings to strings")
        return QuarantinedMessage(
            path=path,
            event_type=str(doc["event_type"]),
            stream_seq=int(doc["stream_seq"]),
            reason=str(doc.get("reason") or ""),
            headers=headers,
            body=base64.b64decode(doc["body_base64"], validate=True),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise StorageError(
            f"quarantine record {path} cannot be read ({exc}); it is left in place"
        ) from exc


def quarantined_files(layout: Layout, event_type: str) -> list[Path]:
    """The records of ``event_type`` not yet replayed, by stream sequence."""
    directory = layout.quarantine_dir(event_type)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.json") if p.is_file())


def mark_replayed(record: QuarantinedMessage) -> Path:
    """Step 3: move the record to ``_replayed/`` (durably); returns its new path."""
    dst = record.path.parent / REPLAYED_DIR / record.path.name
    move_durable(record.path, dst)
    return dst
