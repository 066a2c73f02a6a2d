"""Table schemas from the bucket files' Arrow schemas, and the field-id check of a commit.

Field ids belong to the table. It is created from the first Arrow schema it sees
(pyiceberg assigns fresh ids, whatever a schema carries), and every later schema
is merged by name (``union_by_name``): a field keeps its id for as long as the
table lives, a new field gets the next id, a field a new version removed stays in
the table (null in later buckets), and ``int -> long`` / ``float -> double``
promotions become Iceberg promotions. A change Iceberg cannot express fails the
update, loudly (:class:`TableMappingError`), and the type's commits stop until the
table is fixed by hand: the promotions Avro allows and Iceberg does not
(``int``/``long`` -> ``float``/``double``, ``string`` <-> ``bytes``), and forced
registry changes.

Bucket files carry no field ids. Readers resolve their columns through the
table's name mapping (``schema.name-mapping.default``), which pyiceberg writes on
the first commit and extends on every schema update. The closer writes columns by
name; so no second copy of the id assignment exists that could drift from the
table's.

The danger is silent: pyiceberg accepts a file whose ids (or mapped names) point
at other columns, and those columns then read back as NULL. So before a commit,
:func:`check_file_mapping` resolves each file's columns exactly as a reader will
(ids if the file has them, else the name mapping) and refuses the commit unless
every column lands on the table column of the same name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from courier.errors import TableMappingError, TableSchemaError

if TYPE_CHECKING:
    from pyiceberg.table import Table


def _names(schema: pa.Schema) -> set[str]:
    return set(schema.names)


def check_representable(event_type: str, schema: pa.Schema) -> None:
    """Refuse (:class:`TableSchemaError`) a schema with a column type an Iceberg v2 table
    cannot hold: ``timestamp[ns]`` (Avro ``timestamp-nanos``, ``local-timestamp-nanos``),
    ``time32[ms]`` (``time-millis``), ``null``. pyiceberg 0.12 writes no v3 tables, and
    reading such a file as a microsecond column would be wrong, not just slow."""
    from pyiceberg.io.pyarrow import UnsupportedPyArrowTypeException, _pyarrow_to_schema_without_ids

    try:
        _pyarrow_to_schema_without_ids(schema)
    except (UnsupportedPyArrowTypeException, ValueError) as exc:
        raise TableSchemaError(
            f"{event_type} cannot be an Iceberg table ({exc}); its buckets close as always "
            "and stay readable as files, and `courier audit` lists them as not in a table"
        ) from exc


def evolve(table: Table, schemas: list[pa.Schema]) -> Table:
    """Merge ``schemas`` into the table's schema by name when they add anything."""
    from pyiceberg.exceptions import ValidationError
    from pyiceberg.io.pyarrow import _pyarrow_to_schema_without_ids
    from pyiceberg.schema import assign_fresh_schema_ids

    current = table.schema()
    for schema in schemas:
        # Fresh ids: without ids every field is -1, and the id walk of _adds_anything
        # would see only one column (a new column anywhere but last went unnoticed).
        wanted = assign_fresh_schema_ids(_pyarrow_to_schema_without_ids(schema))
        if not _adds_anything(current, wanted):
            continue
        try:
            with table.update_schema() as update:
                update.union_by_name(schema)
        except (ValidationError, ValueError, TypeError) as exc:
            raise TableMappingError(
                f"table {'.'.join(table.name())} cannot take schema {schema.names}: {exc}; "
                "commits of this type stop until the table is fixed by hand"
            ) from exc
        current = table.schema()
    return table


def _adds_anything(current: object, wanted: object) -> bool:
    """True when ``wanted`` has a column path the table lacks, or a type wider than (or
    incompatible with) the table's. A narrower type (an ``int`` file under a ``long``
    column: a bucket closed before the promotion) adds nothing: readers promote it."""
    from pyiceberg.exceptions import ResolveError
    from pyiceberg.schema import Schema, promote

    assert isinstance(current, Schema) and isinstance(wanted, Schema)
    have = {current.find_column_name(i): current.find_type(i) for i in current.field_ids}
    for field_id in wanted.field_ids:
        name = wanted.find_column_name(field_id)
        if name is None:
            continue
        want = wanted.find_type(field_id)
        old = have.get(name)
        if old is None:
            return True
        if old == want or not want.is_primitive:
            continue
        try:
            promote(want, old)  # the file's type reads as the table's: nothing to add
        except ResolveError:
            return True
    return False


def check_file_mapping(table: Table, path: str, arrow_schema: pa.Schema) -> None:
    """Refuse a file whose columns would not read back as the table's columns of the
    same name (:class:`TableMappingError`, naming the file and the columns)."""
    from pyiceberg.io.pyarrow import pyarrow_to_schema

    table_schema = table.schema()
    # Before the first commit writes it, the mapping is the one the commit will write.
    mapping = table.metadata.name_mapping() or table_schema.name_mapping
    where = f"{path} for table {'.'.join(table.name())}"
    try:
        resolved = pyarrow_to_schema(arrow_schema, name_mapping=mapping)
    except (ValueError, KeyError) as exc:
        raise TableMappingError(
            f"the columns of {where} do not resolve to field ids ({exc}); not committed"
        ) from exc
    wrong: list[str] = []
    for field_id in sorted(resolved.field_ids):
        name = resolved.find_column_name(field_id)
        in_table = table_schema.find_column_name(field_id)
        if name is not None and in_table != name:
            wrong.append(f"{name} -> id {field_id} ({in_table or 'no such column'})")
    if wrong:
        raise TableMappingError(
            f"{where} would read wrong columns (they would come back NULL): "
            f"{'; '.join(wrong)}; not committed — fix the table's name mapping or the file"
        )
