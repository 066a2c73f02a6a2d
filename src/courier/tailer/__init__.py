"""The file tailer: follow JSON-lines log files and deliver each line once (``courier tail``)."""

from courier.tailer.checkpoint import Checkpoint
from courier.tailer.files import TailedFile, fingerprint, line_id
from courier.tailer.metrics import TailerCollector
from courier.tailer.tailer import Deliverer, Tailer, TailerSettings, TailerStats, event_payload

__all__ = [
    "Checkpoint",
    "Deliverer",
    "TailedFile",
    "Tailer",
    "TailerCollector",
    "TailerSettings",
    "TailerStats",
    "event_payload",
    "fingerprint",
    "line_id",
]
