"""Run-change events in commit order: the cursor, and reading `run_events` / `run_stream_chunks` after one.

Why not just `id > cursor`: on PostgreSQL a serial id is taken when the row is inserted, not when
its transaction commits, so a transaction that took id 5 can commit after one that took id 6. A
reader that saw 6 and moved its cursor past it would never see 5. Each row therefore records its
transaction's id (`txid`, from `pg_current_xact_id()`), rows are ordered by (txid, id), and a
reader only reads rows whose transaction is older than the oldest transaction still running in
this database (`pg_current_snapshot()`'s running xids, less those of other databases): every such
transaction has ended, so nothing can appear below that line any
more, and the rows read form a prefix that only grows at its end. A new transaction always gets a
larger txid than any finished one, so nothing lands behind a cursor. (The cost: a change becomes
readable once the transactions that started before it end; the engine's are short. A lock that
serializes every event-writing transaction would also do, at the cost of the claim path's
throughput; assigning cursors after commit would need an extra writer.)

On SQLite writers are serialized by the database's single write lock, so the id alone is in commit
order: `txid` is 0 there and no horizon is needed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import sqlalchemy as sa

_CURSOR = re.compile(r"^(\d{1,19})-(\d{1,19})$")
MAX_BIGINT = 2**63 - 1


@dataclasses.dataclass(frozen=True, order=True)
class Cursor:
    txid: int
    id: int

    def __str__(self) -> str:
        return f"{self.txid}-{self.id}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """A cursor from its text (`ValueError` when it is not one)."""
        match = _CURSOR.match(text.strip())
        if match is None:
            raise ValueError(f"not an event cursor: {text[:40]!r} (expected <txid>-<id>, as sent in an event's id)")
        cursor = cls(int(match[1]), int(match[2]))
        if max(cursor.txid, cursor.id) > MAX_BIGINT:
            raise ValueError("event cursor out of range")
        return cursor

    @classmethod
    def of(cls, row: sa.Row) -> Cursor:
        return cls(row.txid, row.id)


START = Cursor(0, 0)
# The oldest transaction still running that may write this database's tables: the snapshot's running
# xids (epoch-aware xid8), less those pg_stat_activity shows running in another database (a transaction
# never writes another database's tables); with none left, the next xid to be assigned. An xid it
# cannot place (a subtransaction, a backend it may not see) counts as running here: later, never wrong.
_HORIZON = sa.text("""
WITH snapshot AS (SELECT pg_current_snapshot() AS s),
elsewhere AS (SELECT backend_xid::text::bigint AS xid FROM pg_stat_activity
              WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database())
SELECT coalesce(
  (SELECT min(x::text::bigint) FROM snapshot, pg_snapshot_xip(snapshot.s) AS x
   WHERE x::text::bigint % 4294967296 NOT IN (SELECT xid FROM elsewhere)),
  (SELECT pg_snapshot_xmax(s)::text::bigint FROM snapshot))
""")


class Unread:
    """The horizon is still to be read (None is SQLite's: no horizon)."""


UNREAD = Unread()


@dataclasses.dataclass(frozen=True)
class Page:
    rows: list[sa.Row]
    held_back: bool  # committed rows exist past the horizon: read again soon


class EventLog:
    """Reads one cursor-ordered table (`run_events` or `run_stream_chunks`) in commit order."""

    def __init__(self, table: sa.Table, *, postgres: bool) -> None:
        self.postgres = postgres
        self.table = table
        self._order = (table.c.txid, table.c.id)

    def horizon(self, c: sa.Connection) -> int | None:
        """The oldest running transaction's id (of this database): rows of older ones are final. None on SQLite.

        Taken in its own statement before the rows are read: the read's later snapshot then sees every
        transaction below the horizon as ended (a later horizon than the read's snapshot could pass
        over a transaction that committed between the two).
        """
        return c.execute(_HORIZON).scalar_one() if self.postgres else None

    def read(self, c: sa.Connection, after: Cursor, where: Sequence[sa.ColumnElement[bool]] = (),
             *, until: Cursor | None = None, limit: int = 500, columns: Sequence[sa.ColumnElement] = (),
             join: sa.FromClause | None = None, horizon: int | Unread | None = UNREAD) -> Page:
        """Rows after `after` (and at most `until`) in commit order, up to the horizon (one taken before, in
        this connection: the hub reads both tables with one, a round trip less)."""
        if isinstance(horizon, Unread):
            horizon = self.horizon(c)
        t = self.table
        stmt = (sa.select(*(columns or [t])).select_from(join if join is not None else t)
                .where(sa.tuple_(*self._order) > sa.tuple_(after.txid, after.id), *where)
                .order_by(*self._order).limit(limit))
        if until is not None:
            stmt = stmt.where(sa.tuple_(*self._order) <= sa.tuple_(until.txid, until.id))
        rows = c.execute(stmt).all()
        if horizon is None:
            return Page(rows, False)
        final = [r for r in rows if r.txid < horizon]
        return Page(final, len(final) < len(rows))

    def end(self, c: sa.Connection) -> Cursor:
        """The cursor of the last final row: where a reader that wants only what comes next starts."""
        horizon = self.horizon(c)
        t = self.table
        stmt = sa.select(t.c.txid, t.c.id).order_by(t.c.txid.desc(), t.c.id.desc()).limit(1)
        if horizon is not None:
            stmt = stmt.where(t.c.txid < horizon)
        row = c.execute(stmt).first()
        return Cursor.of(row) if row is not None else START
