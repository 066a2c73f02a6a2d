"""Segment-compatible ingest: Segment's and RudderStack's clients send to Courier unchanged.

:class:`SegmentRoutes` adds ``/v1/batch``, ``/v1/track`` (...) and analytics.js's
short paths to the gateway app; :mod:`~courier.gateway.segment.mapping` maps
Segment calls onto Courier events; ``schemas/`` holds the shipped event types
(``SegmentIdentify``, ``SegmentTrack``, ``SegmentPage``, ``SegmentScreen``,
``SegmentGroup``, ``SegmentAlias``): register them with
``courier schema apply --segment``.
"""

from pathlib import Path

from courier.gateway.segment.mapping import CALL_TYPES, SHORT_PATHS
from courier.gateway.segment.routes import SegmentRoutes, write_key

#: ``<Type>.avsc`` + ``<Type>.toml`` of the shipped Segment types.
SCHEMAS_DIR = Path(__file__).parent / "schemas"

__all__ = ["CALL_TYPES", "SCHEMAS_DIR", "SHORT_PATHS", "SegmentRoutes", "write_key"]
