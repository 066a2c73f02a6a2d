"""The per-DC panel (several DCs only, DESIGN §13): how far behind each DC's source is.

The figures are the per-DC audit's (:mod:`courier.audit.dc`), computed from what the
delivery region has actually stored, never from a source's own ``lag``. A
:class:`~courier.audit.dc.DcChecker` keeps its per-DC tallies between checks, so a
check reads only the messages stored since the previous one. A check still asks every
DC for its last sequence and looks back for the newest sourced messages, so one
document serves every page polling within :data:`DC_CHECK_MIN_INTERVAL_SECS`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from courier.audit.dc import DcAudit, DcChecker
from courier.model import iso_utc
from courier.schema import Registry
from courier.settings import Settings
from courier.transport import Transport

#: One check at most this often, whatever the number of pages refreshing.
DC_CHECK_MIN_INTERVAL_SECS = 1.0


def dc_row(r: DcAudit) -> dict[str, Any]:
    """One (type, DC) row of the panel: the audit's own JSON plus its one-word status."""
    return {**r.to_json(), "reachable": r.reachable, "exact": r.exact, "status": r.status}


class DcPanel:
    """The panel's JSON document, checked at most every ``min_interval_secs``."""

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        registry: Registry,
        *,
        min_interval_secs: float = DC_CHECK_MIN_INTERVAL_SECS,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._checker = DcChecker(settings, transport)
        self._min_interval_secs = min_interval_secs
        # A check updates the tallies in place: one at a time, and the pages that
        # waited for it take its answer.
        self._lock = asyncio.Lock()
        self._doc: dict[str, Any] | None = None
        self._checked_at = 0.0

    async def doc(self) -> dict[str, Any]:
        """Per type and DC: stored, behind (messages, seconds), transfer delay, status."""
        async with self._lock:
            fresh = time.monotonic() - self._checked_at < self._min_interval_secs
            if self._doc is None or not fresh:
                names = sorted(await self._registry.compiled())
                rows = await self._checker.check(names)
                self._doc = {
                    "generated_at": iso_utc(time.time()),
                    "domains": list(self._settings.dc.domains),
                    "max_transfer_delay_secs": self._settings.dc.max_transfer_delay_secs,
                    "rows": [dc_row(r) for r in rows],
                }
                self._checked_at = time.monotonic()
            return self._doc

    async def close(self) -> None:
        """Close the direct connections to the DCs (``dc.nats_urls``)."""
        await self._checker.close()
