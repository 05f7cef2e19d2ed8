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
    statement, json_columns = _statement(table, columns)
    params = {}
    for index, name in enumerate(columns):
        values = [row[name] for row in rows]
        params[f"c{index}"] = [json.dumps(v) for v in values] if name in json_columns else values
    connection.execute(statement, params)


@functools.cache
def _statement(table: sa.Table, columns: tuple[str, ...]) -> tuple[sa.TextClause, frozenset[str]]:
    json_columns = frozenset(name for name in columns if isinstance(table.c[name].type, sa.JSON))
    arrays = ", ".join(f"CAST(:c{index} AS {table.c[name].type.compile(dialect=_PG)}[])"
                       for index, name in enumerate(columns))
    names = ", ".join(f'"{name}"' for name in columns)
    return sa.text(f'INSERT INTO "{table.name}" ({names}) SELECT * FROM unnest({arrays})'), json_columns
