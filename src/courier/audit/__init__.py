"""Audit: independent counts per (type, bucket), reconciliation and SLOs (DESIGN §10).

* :class:`Auditor` counts each stream through the ``audit`` consumer;
* :class:`GatewayTally` counts what gateways accept and reject;
* :func:`build_report` reconciles those counts with what closed buckets hold.
"""

from courier.audit.counter import Auditor, count_events, recount
from courier.audit.gateway import UNKNOWN_TYPE, GatewayTally
from courier.audit.metrics import AuditorMetrics
from courier.audit.report import (
    BucketAudit,
    DeliveredScanner,
    Problem,
    Report,
    TypeView,
    audit_type,
    build_report,
    gather_types,
)
from courier.audit.store import AuditStore, GatewayCounts, StreamCounts

__all__ = [
    "UNKNOWN_TYPE",
    "AuditStore",
    "Auditor",
    "AuditorMetrics",
    "BucketAudit",
    "DeliveredScanner",
    "GatewayCounts",
    "GatewayTally",
    "Problem",
    "Report",
    "StreamCounts",
    "TypeView",
    "audit_type",
    "build_report",
    "count_events",
    "gather_types",
    "recount",
]
