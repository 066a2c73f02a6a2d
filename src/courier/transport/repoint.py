"""Re-pointing a type's ``writer`` consumer to deliver again from a stream position (DESIGN §10).

This is the transport half of ``courier repair redeliver``; why a redelivery is
safe for closed buckets is written in :mod:`courier.repair.redeliver`.

The protocol of :func:`repoint_writer`:

1. read the stream's retained range and the ``writer`` consumer (its ack floor
   and configuration); refuse an unknown type, and a consumer whose live
   configuration differs from these settings (it would be recreated with
   another one);
2. resolve the start to a stream sequence (a time becomes the first message
   published at or after it) and check it: not before the first retained
   sequence (that data is gone), not after the ack floor + 1 (that would skip
   messages the writers have not acked yet: loss);
3. delete the consumer;
4. create it again with the provisioning configuration, deliver policy
   ``by_start_sequence`` at the start.

The start is always a sequence, also when asked by time, because step 2 can
only prove "nothing unacked is skipped" on sequences. A crash between 3 and 4
leaves the type without its writer consumer: writers retry their fetches,
closers cannot compute its watermark and keep its buckets open; nothing is lost
or closed early. Re-running the repair, or ``courier provision`` (which creates
the consumer delivering every retained message again, equally safe), ends it.

Acks still in flight from the old consumer's deliveries reach the new one: an
ack is only sent after the message is durable in a staging file, so whichever
delivery it acknowledges, the data is safe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js.api import DeliverPolicy

from courier.errors import (
    ProvisioningError,
    RepairRefusedError,
    TransportError,
    UnknownEventTypeError,
)
from courier.model import iso_utc
from courier.settings import Settings
from courier.transport.client import Transport
from courier.transport.names import WRITER_CONSUMER, events_subject, stream_name
from courier.transport.provision import CONSUMER_FIELDS, consumer_spec, diff_config

log = logging.getLogger("courier.transport.repoint")


@dataclass(frozen=True, slots=True)
class Repointed:
    """Where a type's writer consumer now starts, and the stream around it."""

    event_type: str
    from_seq: int
    stream_first_seq: int
    stream_last_seq: int
    #: The consumer's ack floor just before it was re-pointed.
    previous_ack_floor_seq: int

    @property
    def messages(self) -> int:
        """Messages the writers will receive again (at most; some may have expired)."""
        return max(0, self.stream_last_seq - self.from_seq + 1)


async def repoint_writer(
    transport: Transport,
    settings: Settings,
    event_type: str,
    *,
    from_seq: int | None = None,
    from_time: float | None = None,
) -> Repointed:
    """Make the writer consumer of ``event_type`` deliver again from ``from_seq`` or ``from_time``.

    Raises UnknownEventTypeError (no stream), RepairRefusedError (the start is
    out of range; nothing changed), ProvisioningError (the live consumer differs
    from the settings) or TransportError.
    """
    if (from_seq is None) == (from_time is None):
        raise ValueError("give exactly one of from_seq and from_time")
    stream = stream_name(event_type)
    want = consumer_spec(settings, event_type, WRITER_CONSUMER)
    js = transport.js
    try:
        # Step 1: the stream's range and the consumer's state.
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError as exc:
            raise UnknownEventTypeError(
                f"event type {event_type!r} has no stream {stream}; nothing was redelivered"
            ) from exc
        try:
            consumer = await js.consumer_info(stream, WRITER_CONSUMER)
        except nats.js.errors.NotFoundError as exc:
            raise ProvisioningError(
                f"consumer {WRITER_CONSUMER} on {stream} is missing; run `courier provision` "
                "(it redelivers every retained message); nothing was changed"
            ) from exc
        drift = diff_config(want, consumer.config, CONSUMER_FIELDS)
        if drift:
            raise ProvisioningError(
                f"the live {WRITER_CONSUMER} consumer of {event_type} differs from this "
                "gateway's settings (" + "; ".join(drift) + "); run `courier provision` "
                "first; nothing was changed"
            )
        first = max(1, int(info.state.first_seq or 0))
        last = int(info.state.last_seq or 0)
        floor = consumer.ack_floor.stream_seq if consumer.ack_floor else 0
        # Step 2: resolve and check the start.
        if from_time is not None:
            start = await _first_seq_at(transport, event_type, from_time, first, last)
        else:
            assert from_seq is not None
            start = from_seq
        _check_start(event_type, start, from_time, first, last, floor)
        # Step 3: delete.
        await js.delete_consumer(stream, WRITER_CONSUMER)
        # Step 4: recreate, starting at ``start``.
        await js.add_consumer(
            stream, want.evolve(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start)
        )
    except nats.errors.Error as exc:
        raise TransportError(
            f"re-pointing the {WRITER_CONSUMER} consumer of {event_type} failed: {exc}; "
            "run the repair again (if the consumer is now missing, its buckets stay open)"
        ) from exc
    log.info(
        "re-pointed %s/%s to deliver from seq %d (ack floor was %d, stream %d..%d)",
        stream,
        WRITER_CONSUMER,
        start,
        floor,
        first,
        last,
    )
    return Repointed(event_type, start, first, last, floor)


def _check_start(
    event_type: str, start: int, from_time: float | None, first: int, last: int, floor: int
) -> None:
    asked = f"seq {start}" if from_time is None else f"{iso_utc(from_time)} (seq {start})"
    if start < 1:
        raise RepairRefusedError(f"stream sequences start at 1, not {start}; nothing was changed")
    if start < first:
        raise RepairRefusedError(
            f"the stream of {event_type} no longer holds {asked}: its first retained message is "
            f"seq {first} (older ones expired or were removed), so they cannot be redelivered; "
            f"redeliver from seq {first} or later; nothing was changed"
        )
    if start > floor + 1:
        raise RepairRefusedError(
            f"redelivering {event_type} from {asked} would skip seq {floor + 1}..{start - 1}, "
            f"which the writers have not all acked yet (ack floor {floor}, stream ends at "
            f"{last}); a redelivery may only go back; nothing was changed"
        )


async def _first_seq_at(
    transport: Transport, event_type: str, from_time: float, first: int, last: int
) -> int:
    """The sequence of the first retained message published at or after ``from_time``
    (``last + 1`` when there is none), by binary search over direct gets.

    A time before the first retained message resolves to ``first``: that is only
    complete when nothing was ever removed from the front (``first == 1``); else
    step 2 refuses it, since messages of that time may be gone.
    """
    stream = stream_name(event_type)
    subject = events_subject(event_type)

    async def published_at(seq: int) -> tuple[int, float] | None:
        try:
            raw = await transport.js.get_msg(stream, seq=seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return None
        return int(raw.seq or seq), raw.time.timestamp() if raw.time is not None else 0.0

    lo, hi = first, last + 1
    while lo < hi:
        mid = (lo + hi) // 2
        found = await published_at(mid)
        if found is None or found[1] >= from_time:
            hi = mid
        else:
            lo = found[0] + 1
    if lo == first and first > 1:
        head = await published_at(first)
        if head is not None and from_time < head[1]:
            raise RepairRefusedError(
                f"the stream of {event_type} no longer holds messages from "
                f"{iso_utc(from_time)}: its first retained message (seq {head[0]}) was "
                f"published at {iso_utc(head[1])}, older ones expired or were removed; "
                "redeliver from that time or later; nothing was changed"
            )
    return lo
