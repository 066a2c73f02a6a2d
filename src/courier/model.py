"""Event envelope names, bucket keys, ids and time helpers shared by every component.

A bucket is identified by (event type, bucket start). The bucket start is a
UTC epoch second that is a multiple of ``bucket_width_secs`` (a divisor of a
day, 3600 by default). The partition path of a bucket extends Hive's
``date=YYYY-MM-DD/hour=HH`` with ``minute=MM`` when the width is not a whole
number of hours and ``second=SS`` when it is not a whole number of minutes, so
hourly data keeps the classic layout and short test buckets sort naturally.
"""

from __future__ import annotations

import os
import random
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

SECONDS_PER_DAY = 86_400

#: Envelope columns present in every bucket; schemas may not use these names.
RESERVED_FIELDS: frozenset[str] = frozenset(
    {
        "id",
        "type",
        "time",
        "sent_at",
        "received_at",
        "published_at",
        "received_dc",
        "schema_version",
    }
)

#: The built-in dataset that keeps events the gateway rejected, with the reason.
INVALID_TYPE = "_invalid"

#: What an event type may be called (a regular expression, matched in full).
TYPE_NAME_PATTERN = "[A-Z][A-Za-z0-9_]{0,63}"
_TYPE_NAME = re.compile(TYPE_NAME_PATTERN)
MAX_ID_BYTES = 128


def is_valid_type_name(name: str) -> bool:
    """True for a name usable as an event type (``[A-Z][A-Za-z0-9_]{0,63}``)."""
    return _TYPE_NAME.fullmatch(name) is not None


def validate_bucket_width(width_secs: int) -> int:
    """Return the width if it is a positive divisor of a day, else raise ValueError."""
    if width_secs <= 0 or SECONDS_PER_DAY % width_secs != 0:
        raise ValueError(
            f"bucket width {width_secs}s must be a positive divisor of 86400 "
            "(e.g. 3600, 900, 60, 10)"
        )
    return width_secs


@dataclass(frozen=True, order=True, slots=True)
class BucketKey:
    """One bucket: an event type and the UTC epoch second the bucket starts at."""

    event_type: str
    start: int

    def end(self, width_secs: int) -> int:
        return self.start + width_secs

    def previous(self, width_secs: int) -> BucketKey:
        return BucketKey(self.event_type, self.start - width_secs)

    def next(self, width_secs: int) -> BucketKey:
        return BucketKey(self.event_type, self.start + width_secs)

    def label(self) -> str:
        """Compact, sortable text form used in KV keys and logs: ``PlaySong.1764151200``."""
        return f"{self.event_type}.{self.start}"


def bucket_start(epoch_secs: float, width_secs: int) -> int:
    """Start of the bucket that contains ``epoch_secs``."""
    whole = int(epoch_secs // 1)
    return whole - whole % width_secs


def partition_path(start: int, width_secs: int) -> str:
    """Hive-style relative directory of a bucket, e.g. ``date=2026-11-26/hour=10``."""
    t = datetime.fromtimestamp(start, tz=UTC)
    parts = [f"date={t:%Y-%m-%d}", f"hour={t:%H}"]
    if width_secs % 3600 != 0:
        parts.append(f"minute={t:%M}")
    if width_secs % 60 != 0:
        parts.append(f"second={t:%S}")
    return "/".join(parts)


_PARTITION = re.compile(
    r"date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})(?:/minute=(\d{2}))?(?:/second=(\d{2}))?$"
)


def parse_partition_path(path: str) -> int:
    """Inverse of :func:`partition_path`: the bucket start of a partition directory."""
    m = _PARTITION.search(path.replace(os.sep, "/"))
    if m is None:
        raise ValueError(f"not a bucket partition path: {path!r}")
    day, hour, minute, second = m.groups()
    t = datetime.fromisoformat(day).replace(
        hour=int(hour), minute=int(minute or 0), second=int(second or 0), tzinfo=UTC
    )
    return int(t.timestamp())


def iso_utc(epoch_secs: float) -> str:
    """RFC 3339 UTC text with millisecond precision and a ``Z`` suffix."""
    t = datetime.fromtimestamp(epoch_secs, tz=UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_time(text: str) -> float:
    """Parse RFC 3339 / ISO 8601 text (or epoch seconds) into epoch seconds (UTC)."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then 74 random bits; sortable by time.

    The random bits come from :mod:`random`'s global generator (seeded from the OS
    and re-seeded in forked children): ids must be unique, not unguessable, and
    this is several times faster than a system call per id on the producer's hot path.
    """
    ms = time.time_ns() // 1_000_000
    rand = random.getrandbits(74)
    value = (
        ((ms & 0xFFFF_FFFF_FFFF) << 80)
        | (0x7 << 76)
        | ((rand >> 62) << 64)
        | (0b10 << 62)
        | (rand & ((1 << 62) - 1))
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
