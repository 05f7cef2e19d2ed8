"""SQLite store: writers take the write lock up front, readers take none (WAL)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from outlast.runtime.store.db import Database


@pytest.fixture
def db(tmp_path: Path):
    database = Database(f"sqlite:///{tmp_path / 'store.db'}")
    with database.begin() as c:
        c.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    yield database
    database.dispose()


def test_a_reader_in_a_transaction_does_not_hold_up_a_writer(db: Database, tmp_path: Path) -> None:
    """A read transaction left open (a slow listing, a stream) must not take the write lock: with it, every
    claim and report would sleep in SQLite's busy handler until the read ended (here: 30 s, then fail)."""
    with db.connect() as reader:
        assert reader.execute(sa.text("SELECT count(*) FROM t")).scalar() == 0
        assert reader.in_transaction()
        other = sqlite3.connect(tmp_path / "store.db", timeout=0)
        other.execute("BEGIN IMMEDIATE")  # would raise "database is locked" if the reader held the lock
        other.execute("INSERT INTO t VALUES (1)")
        other.commit()
        other.close()
        with db.begin() as writer:
            writer.execute(sa.text("INSERT INTO t VALUES (2)"))
        assert reader.execute(sa.text("SELECT count(*) FROM t")).scalar() == 0  # its snapshot, as WAL promises
    with db.connect() as reader:
        assert reader.execute(sa.text("SELECT count(*) FROM t")).scalar() == 2


def test_a_write_transaction_takes_the_write_lock_when_it_begins(db: Database, tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: a writer never starts as a reader and fails to upgrade later (SQLITE_BUSY_SNAPSHOT)."""
    with db.begin() as writer:
        writer.execute(sa.text("SELECT count(*) FROM t"))
        other = sqlite3.connect(tmp_path / "store.db", timeout=0)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()
