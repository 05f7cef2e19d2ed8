"""Fresh planner statistics for the hot tables: the runtime runs ANALYZE itself when one has grown a lot.

A ready queue that fills from empty sits on the statistics of an empty table until autovacuum
gets to it (minutes, or never where autovacuum is off or slow). With them, PostgreSQL's planner
believes a backlog of 50,000 rows holds a handful and scans and sorts all of it on every claim.
This process counts the rows it inserts into each hot table; once they reach the table's size at
its last ANALYZE (the table about doubled, or grew by `minimum_rows` from nothing), it analyses the
table on a connection of its own, off the request path, after the inserting transaction committed.
"""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa

log = logging.getLogger(__name__)

HOT_TABLES = ("run_queue", "runs")
_RELTUPLES = sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST(:table AS regclass)")


class GrowthAnalyser:
    """ANALYZE a hot table once this process inserted as many rows into it as it had (PostgreSQL only)."""

    def __init__(self, engine: sa.Engine, *, growth_factor: float = 2.0, minimum_rows: int = 1000) -> None:
        self.engine = engine
        self.enabled = engine.dialect.name == "postgresql"
        self.growth_factor = growth_factor
        self.minimum_rows = minimum_rows
        self._lock = threading.Lock()
        self._inserted = dict.fromkeys(HOT_TABLES, 0)  # rows inserted since the last ANALYZE began
        self._analysed_size = dict.fromkeys(HOT_TABLES, 0.0)  # reltuples right after it
        self._running: set[str] = set()
        self.analyses = 0  # ANALYZE statements run, for tests and the benchmark

    def inserted(self, table: str, rows: int) -> None:
        """`rows` were inserted into `table` in a transaction not committed yet (see `flush`)."""
        if self.enabled and rows:
            with self._lock:
                self._inserted[table] += rows

    def flush(self) -> None:
        """After a commit: start an ANALYZE of each table that grew by the factor since its last one."""
        if not self.enabled:
            return
        with self._lock:
            due = [table for table, rows in self._inserted.items() if table not in self._running and rows >= max(
                self.minimum_rows, (self.growth_factor - 1) * self._analysed_size[table])]
            for table in due:
                self._running.add(table)
                self._inserted[table] = 0
        for table in due:
            threading.Thread(target=self._analyse, args=(table,), name=f"analyse-{table}", daemon=True).start()

    def _analyse(self, table: str) -> None:
        try:
            with self.engine.begin() as c:
                c.exec_driver_sql(f"ANALYZE {table}")  # a name from HOT_TABLES, never user input
                size = float(c.execute(_RELTUPLES, {"table": table}).scalar() or 0)
            with self._lock:
                self._analysed_size[table] = max(size, 0.0)
                self.analyses += 1
        except Exception as exc:  # the store went away (shutdown, failover): the next growth tries again
            log.warning("could not analyse %s: %s", table, exc)
        finally:
            with self._lock:
                self._running.discard(table)
