"""Repairs (DESIGN §10): admin-only, audited, explicit.

The gateway serves them under ``/v1/admin/`` behind the admin key; the
``courier repair`` commands call those routes. Every call is recorded in the
repair log (:mod:`courier.repair.log`).
"""

from courier.repair.log import RepairLog, RepairRecord
from courier.repair.quarantine import (
    QuarantinedMessage,
    mark_replayed,
    quarantined_keys,
    read_quarantined,
)
from courier.repair.redeliver import RedeliverRequest, parse_redeliver, redeliver
from courier.repair.republish import RepublishRequest, parse_republish, republish
from courier.repair.target import MemoryRepairTarget, NatsRepairTarget, RepairTarget

__all__ = [
    "MemoryRepairTarget",
    "NatsRepairTarget",
    "QuarantinedMessage",
    "RedeliverRequest",
    "RepairLog",
    "RepairRecord",
    "RepairTarget",
    "RepublishRequest",
    "mark_replayed",
    "parse_redeliver",
    "parse_republish",
    "quarantined_keys",
    "read_quarantined",
    "redeliver",
    "republish",
]
