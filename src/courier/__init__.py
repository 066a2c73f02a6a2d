"""Courier: reliable event delivery into immutable hourly buckets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from courier.sdk import AsyncProducer, Producer, SpoolFull

__all__ = ["AsyncProducer", "Producer", "SpoolFull", "__version__"]
_SDK_NAMES = frozenset({"AsyncProducer", "Producer", "SpoolFull"})


def __getattr__(name: str) -> Any:
    # Lazy, so that importing any courier module does not load the SDK (or httpx).
    if name in _SDK_NAMES:
        import courier.sdk

        return getattr(courier.sdk, name)
    raise AttributeError(f"module 'courier' has no attribute {name!r}")
