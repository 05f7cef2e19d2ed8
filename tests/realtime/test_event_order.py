"""The event log's reading order on a real store: a transaction that commits late is never skipped on
PostgreSQL (serial ids are not commit-ordered), and stream writes are limited and stored once."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from outlast.runtime.engine.events import START, Cursor, EventLog
from outlast.runtime.engine.streams import StreamClosed, StreamLimits, StreamRefused, Streams
from outlast.runtime.store.db import Database
from outlast.runtime.store.schema import run_events, run_stream_chunks, runs
from outlast.wire import StreamAppend, StreamWrite


@pytest.fixture
def db(store, tmp_path):
    database = Database(store or f"sqlite:///{tmp_path / 'events.db'}")
    database.migrate()
    yield database
    database.dispose()


def _run(c: sa.Connection, run_id: str, status: str = "EXECUTING") -> None:
    now = time.time()
    c.execute(runs.insert().values(id=run_id, env_id="dev", task_id="t", status=status, attempts=1, max_attempts=1,
                                   retry={}, tags=[], metadata={}, queue="t", priority=0, execution_ms=0,
                                   created_at=now, updated_at=now))


def _event(c: sa.Connection, run_id: str, message: str) -> None:
    c.execute(run_events.insert().values(run_id=run_id, time=time.time(), kind="status", message=message, data={}))


def test_a_late_commit_is_read_in_order_not_skipped(db, store):
    if store is None:
        pytest.skip("SQLite has one writer at a time: its ids are in commit order")
    with db.begin() as c:
        _run(c, "run_order")
    log = EventLog(run_events, postgres=True)
    early = db.engine.connect()
    early.begin()
    _event(early, "run_order", "took the smaller id, commits last")
    with db.begin() as late:
        _event(late, "run_order", "took the larger id, commits first")
    with db.connect() as reader:
        naive = reader.execute(sa.select(run_events.c.message).where(run_events.c.id > 0)).scalars().all()
        page = log.read(reader, START)
    assert naive == ["took the larger id, commits first"], "the problem: a serial-id reader would move past id 1"
    assert page.rows == [] and page.held_back, "nothing is read past a transaction still running"
    early.commit()
    early.close()
    with db.connect() as reader:
        page = log.read(reader, START)
    cursors = [Cursor.of(r) for r in page.rows]
    assert [r.message for r in page.rows] == ["took the smaller id, commits last", "took the larger id, commits first"]
    assert cursors == sorted(cursors) and not page.held_back


def test_metadata_and_tag_changes_become_events(db):
    with db.begin() as c:
        _run(c, "run_meta")
        c.execute(runs.update().where(runs.c.id == "run_meta").values(metadata={"a": 1}))
        c.execute(runs.update().where(runs.c.id == "run_meta").values(metadata={"a": 1}))  # no change
        c.execute(runs.update().where(runs.c.id == "run_meta").values(tags=["x"]))
        c.execute(runs.update().where(runs.c.id == "run_meta").values(status="COMPLETED"))
    with db.connect() as c:
        rows = EventLog(run_events, postgres=not db.is_sqlite).read(c, START).rows
    assert [r.kind for r in rows] == ["metadata", "tags"]


def _write(streams: Streams, seq: int, chunks: list, *, attempt: int = 1) -> object:
    return streams.append(StreamWrite(run_id="run_s", attempt=attempt,
                                      append=StreamAppend(name="tokens", first_seq=seq, chunks=chunks)))


def test_stream_writes_are_limited_and_stored_once(db):
    with db.begin() as c:
        _run(c, "run_s")
    streams = Streams(db, StreamLimits(max_chunk_bytes=10, max_stream_bytes=20, retention_seconds=60))
    assert _write(streams, 0, ["ab", "cd"]).chunks == 2  # '"ab"' is 4 bytes
    assert _write(streams, 0, ["ab", "cd"]).chunks == 2, "a repeated call (after a restore) adds nothing"
    with pytest.raises(StreamRefused, match="the limit is 10 bytes"):
        _write(streams, 2, ["x" * 20])
    assert _write(streams, 2, ["ef", "gh"]).bytes == 16
    with pytest.raises(StreamRefused, match="limit is 20 bytes per stream"):
        _write(streams, 4, ["ij", "kl"])
    with pytest.raises(StreamClosed):
        _write(streams, 0, ["old"], attempt=2)
    with db.connect() as c:
        chunks = EventLog(run_stream_chunks, postgres=not db.is_sqlite).read(c, START).rows
    assert [r.data for r in chunks] == ["ab", "cd", "ef", "gh"]
    expired = Streams(db, StreamLimits(retention_seconds=60), clock=lambda: time.time() + 120)
    assert expired.expire() == 1
    assert streams.names("dev", "run_s") == []
