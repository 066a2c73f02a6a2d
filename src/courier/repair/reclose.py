"""``courier repair reclose``: a recorded re-close of one bucket, run where the data dir is.

The re-close itself is :mod:`courier.closer.reclose`; this adds what makes it a
repair: the caller's identity and the repair log record around it.
"""

from __future__ import annotations

import getpass
import socket
import time
from typing import TYPE_CHECKING

from courier.errors import RepairRefusedError
from courier.model import BucketKey, iso_utc
from courier.repair.log import RepairLog
from courier.service.runtime import connect_service
from courier.settings import Settings
from courier.transport import CATALOG_KV, REPAIRS_KV

if TYPE_CHECKING:
    from courier.closer.reclose import RecloseResult

#: How long a re-close waits for NATS to answer before giving up.
WAIT_FOR_NATS_SECS = 10.0


async def reclose_bucket(
    settings: Settings, key: BucketKey, reason: str
) -> tuple[RecloseResult, str]:
    """Re-close bucket ``key`` from the stream, recorded in the repair log; (result, repair id).

    RepairRefusedError when the type is unknown or the stream no longer holds
    every message of the bucket (nothing changed then).
    """
    # DuckDB and pyarrow load only for this command, not for every `courier` call.
    from courier.closer import Catalog
    from courier.closer.reclose import BucketRecloser

    conn = await connect_service(settings, "courier-repair", wait_secs=WAIT_FOR_NATS_SECS)
    try:
        compiled = (await conn.registry.compiled()).get(key.event_type)
        if compiled is None:
            raise RepairRefusedError(f"{key.event_type!r} is not a registered event type")
        log = RepairLog(await conn.transport.key_value(REPAIRS_KV))
        catalog = Catalog(
            await conn.transport.key_value(CATALOG_KV), "repair", settings.closer.claim_lease_secs
        )
        principal = f"local:{getpass.getuser()}@{socket.gethostname()}"
        arguments = {"bucket": iso_utc(key.start), "reason": reason}
        async with log.recording("reclose", key.event_type, principal, arguments) as record:
            result = await BucketRecloser(settings, conn.transport, catalog).reclose(
                key, compiled, repair_id=record.id, reason=reason, now=time.time()
            )
            record.counts.update(result.counts())
            record.result = {"files": [f.name for f in result.manifest.files]}
        return result, record.id
    finally:
        await conn.transport.close()
