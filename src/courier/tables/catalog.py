"""The Iceberg catalog named by settings, and one table per event type in it.

Default: an embedded SQLite ``SqlCatalog`` at ``<data_dir>/_iceberg/catalog.db``
with table metadata under ``<data_dir>/_iceberg/warehouse`` (``_`` keeps it out of
the bucket readers' way). pyiceberg's SQL catalog uses the tables of Iceberg's JDBC
catalog, so Spark and Trino can open the same file. A ``postgresql://`` URI is a
shared SQL catalog; an ``http(s)://`` URI is a REST catalog (the scale-out option).

Tables are created with properties Courier relies on:

- ``commit.retry.num-retries = 0``: pyiceberg would otherwise replay a failed
  append on top of a concurrent commit, and a second closer committing the same
  bucket would add its files twice. A conflict surfaces instead; the caller looks
  the bucket up again and commits only if it is still missing.
- ``commit.manifest-merge.enabled``: one snapshot per bucket would otherwise add a
  manifest per bucket and scan planning would read thousands of them.
- metadata files deleted after commit beyond the last 100 (metadata only).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from courier.errors import TableError
from courier.settings import Settings, TablesSettings

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog as IcebergCatalog
    from pyiceberg.table import Table

TABLE_PROPERTIES = {
    "format-version": "2",
    "commit.retry.num-retries": "0",
    "commit.manifest-merge.enabled": "true",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "100",
    "courier.managed": "true",
}


def iceberg_dir(data_dir: Path) -> Path:
    """Where the embedded catalog and its warehouse live."""
    return data_dir / "_iceberg"


def catalog_properties(cfg: TablesSettings, data_dir: Path) -> dict[str, str]:
    """pyiceberg ``load_catalog`` properties for these settings."""
    root = iceberg_dir(data_dir.absolute())
    uri = cfg.catalog_uri or f"sqlite:///{root / 'catalog.db'}"
    kind = "rest" if uri.startswith(("http://", "https://")) else "sql"
    props = {"type": kind, "uri": uri}
    if kind == "sql":
        props["init_catalog_tables"] = "true"
        props["warehouse"] = cfg.warehouse or f"file://{root / 'warehouse'}"
    elif cfg.warehouse is not None:
        # A REST catalog places tables itself; its "warehouse" names one of its catalogs.
        props["warehouse"] = cfg.warehouse
    return {**props, **cfg.catalog_properties}


def open_catalog(settings: Settings) -> IcebergCatalog:
    """Connect to the catalog (creating the embedded one and the namespace if needed)."""
    from pyiceberg.catalog import load_catalog

    cfg = settings.tables
    props = catalog_properties(cfg, settings.data_dir)
    if cfg.catalog_uri is None:
        iceberg_dir(settings.data_dir).mkdir(parents=True, exist_ok=True)
    try:
        catalog = load_catalog(cfg.catalog_name, **props)
        catalog.create_namespace_if_not_exists(cfg.namespace)
    except Exception as exc:  # the catalog's client errors: network, SQL, HTTP
        raise TableError(
            f"cannot open the Iceberg catalog {props['uri']} ({type(exc).__name__}: {exc}); "
            "table commits wait and retry"
        ) from exc
    return catalog


def table_identifier(cfg: TablesSettings, event_type: str) -> tuple[str, str]:
    return (cfg.namespace, event_type)


def load_table(catalog: IcebergCatalog, cfg: TablesSettings, event_type: str) -> Table | None:
    """The event type's table, or None if it does not exist yet."""
    from pyiceberg.exceptions import NoSuchTableError

    try:
        return catalog.load_table(table_identifier(cfg, event_type))
    except NoSuchTableError:
        return None


def create_table(
    catalog: IcebergCatalog, cfg: TablesSettings, event_type: str, schema: Any
) -> Table:
    """Create the event type's table (unpartitioned: see ``courier.tables``) from an Arrow
    schema; a concurrent creator's table is returned instead."""
    from pyiceberg.exceptions import TableAlreadyExistsError

    try:
        return catalog.create_table(
            table_identifier(cfg, event_type), schema=schema, properties=TABLE_PROPERTIES
        )
    except TableAlreadyExistsError:
        return catalog.load_table(table_identifier(cfg, event_type))
