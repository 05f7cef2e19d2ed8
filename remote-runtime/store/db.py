"""The store's connection: SQLite (embedded default) or PostgreSQL, one SQLAlchemy engine."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
# Execution option of a connection Database.begin() opened: on SQLite its transaction is BEGIN IMMEDIATE.
WRITER = "outlast_writer"


def normalize_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here; SQLite paths stay as given."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class Database:
    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        # SQLite allows one writer; its busy handler sleeps and retries, which costs milliseconds per
        # contended write. Writers of this process queue on a mutex instead, and readers (connect())
        # take no lock at all: in WAL mode a reader sees its snapshot and never blocks a writer.
        self._write_lock = threading.Lock() if self.url.startswith("sqlite") else None
        if self.is_sqlite:
            self.engine = sa.create_engine(self.url, connect_args={"timeout": 30, "check_same_thread": False})
            _tune_sqlite(self.engine)
        else:
            self.engine = sa.create_engine(self.url, pool_size=10, max_overflow=20, pool_recycle=1800)

    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """One write transaction (on SQLite it takes the write lock up front, avoiding upgrade deadlocks)."""
        if self._write_lock is None:
            with self.engine.begin() as connection:
                yield connection
            return
        with self._write_lock, self.engine.connect() as connection:
            connection.execution_options(**{WRITER: True})
            with connection.begin():
                yield connection

    def connect(self) -> sa.Connection:
        """A connection to read with (on SQLite its transactions take no lock: write with begin())."""
        return self.engine.connect()

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def dispose(self) -> None:
        self.engine.dispose()


def _tune_sqlite(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.get_execution_options().get(WRITER) else "BEGIN")
