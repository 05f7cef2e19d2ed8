"""Many rows in one INSERT: on PostgreSQL one statement over arrays (`unnest`), not one execution per row.

An executemany of 1,000 rows, even pipelined by psycopg, costs the server 1,000 executions (bind,
plan, execute, per row); a batch trigger writes three tables, so most of its time went there.
`INSERT ... SELECT * FROM unnest(col1[], col2[], ...)` is one execution whatever the row count,
with one bind parameter per column (never near PostgreSQL's 65,535-parameter limit). SQLite
keeps executemany, which is a loop inside the process there.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

_PG = postgresql.dialect()


def insert_rows(connection: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows` (dicts with the same keys) into `table`; columns they leave out take server defaults
    on PostgreSQL, so a table's Python-side defaults must also be server defaults, or be in every row."""
    if not rows:
        return
    if connection.dialect.name != "postgresql" or len(rows) == 1:
        connection.execute(table.insert(), list(rows))
        return
    columns = tuple(rows[0])
    connection.execute(_insert(table, columns), array_params(table, columns, rows, "c"))


def unnest(table: sa.Table, columns: Sequence[str], prefix: str) -> str:
    """`unnest(CAST(:<prefix>0 AS <type of column 0>[]), ...)`: rows of `columns` of `table` from array parameters
    (see `array_params`), for `FROM unnest(...) AS v(<columns>)` or `SELECT * FROM unnest(...)`."""
    arrays = ", ".join(f"CAST(:{prefix}{index} AS {table.c[name].type.compile(dialect=_PG)}[])"
                       for index, name in enumerate(columns))
    return f"unnest({arrays})"


def array_params(table: sa.Table, columns: Sequence[str], rows: Sequence[Mapping[str, Any]], prefix: str,
                 keys: Sequence[str] | None = None) -> dict[str, list[Any]]:
    """One array parameter per column for `unnest(table, columns, prefix)`: row values read under `keys` (default
    the column names); JSON values serialised as SQLAlchemy does (None as JSON null)."""
    params = {}
    for index, (name, key) in enumerate(zip(columns, keys or columns, strict=True)):
        values = [row[key] for row in rows]
        params[f"{prefix}{index}"] = ([json.dumps(v) for v in values] if isinstance(table.c[name].type, sa.JSON)
                                      else values)
    return params


@functools.cache
def _insert(table: sa.Table, columns: tuple[str, ...]) -> sa.TextClause:
    names = ", ".join(f'"{name}"' for name in columns)
    return sa.text(f'INSERT INTO "{table.name}" ({names}) SELECT * FROM {unnest(table, columns, "c")}')
