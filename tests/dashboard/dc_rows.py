"""A per-DC panel document built from real :class:`DcAudit` rows, for page tests."""

from __future__ import annotations

from typing import Any

from courier.audit.dc import DcAudit
from courier.dashboard.dcs import dc_row

LIMIT_SECS = 2.0


def audit(domain: str, **overrides: Any) -> DcAudit:
    base: dict[str, Any] = {
        "event_type": "PlaySong",
        "domain": domain,
        "stored": 5,
        "highest_seq": 5,
        "missing": 0,
        "missing_ranges": [],
        "repeated": 0,
        "repeated_sample": [],
        "dc_last_seq": 5,
        "behind_messages": 0,
        "behind_secs": 0.0,
        "last_transfer_secs": 0.1,
        "max_transfer_delay_secs": LIMIT_SECS,
    }
    return DcAudit(**{**base, **overrides})


def panel_doc() -> dict[str, Any]:
    """dcA caught up, dcB 2 messages and 7.5 s behind (late), dcC not answering,
    dcD missing DC sequence 3."""
    rows = [
        audit("dcA"),
        audit("dcB", dc_last_seq=7, behind_messages=2, behind_secs=7.5),
        audit("dcC", dc_last_seq=None, behind_messages=None, behind_secs=None),
        audit("dcD", stored=4, missing=1, missing_ranges=[[3, 3]]),
    ]
    return {
        "generated_at": "2026-12-01T16:00:00Z",
        "domains": [r.domain for r in rows],
        "max_transfer_delay_secs": LIMIT_SECS,
        "rows": [dc_row(r) for r in rows],
    }
