"""Example event types shipped with Courier (used by the quick start and tests)."""

from pathlib import Path

#: ``<Type>.avsc`` + ``<Type>.toml`` files of PlaySong, Search and AdImpression.
SCHEMAS_DIR = Path(__file__).parent / "schemas"
