"""Feeds: run events and stream chunks read in commit order (engine/events.py), as ready-to-send messages.

A message is serialized once, however many subscribers it goes to; it keeps what the hub routes by
(environment, run, tags, stream) and whether it ends its run.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import sqlalchemy as sa

from outlast.wire import CHUNK_EVENT, LOG_EVENT, RUN_EVENT, RunChange, RunStatus, StreamChunk

from ..store.schema import run_events, run_stream_chunks, run_tags, runs
from .context import utc
from .events import UNREAD, Cursor, EventLog, Unread
from .reads import to_run

FINAL = frozenset(s.value for s in RunStatus if s.is_final)


@dataclasses.dataclass(frozen=True)
class Message:
    cursor: Cursor
    event: str  # the SSE event name
    data: str  # JSON
    env_id: str
    run_id: str
    tags: frozenset[str]
    stream: str | None = None
    final: bool = False  # a status event that ends its run

    @functools.cached_property
    def frame(self) -> bytes:
        """The SSE frame, built once for every subscriber it goes to."""
        return f"id: {self.cursor}\nevent: {self.event}\ndata: {self.data}\n\n".encode()


@dataclasses.dataclass(frozen=True)
class Batch:
    messages: list[Message]
    end: Cursor | None  # the last row read (None: none), even one no message came from
    held_back: bool  # committed rows wait behind a running transaction: read again soon


class Feeds:
    def __init__(self, *, postgres: bool) -> None:
        self.events = EventLog(run_events, postgres=postgres)
        self.chunks = EventLog(run_stream_chunks, postgres=postgres)

    def changes(self, c: sa.Connection, after: Cursor, *, env_id: str | None = None, run_id: str | None = None,
                tag: str | None = None, run_ids: Sequence[str] | None = None, until: Cursor | None = None,
                logs: bool = True, limit: int = 500, horizon: int | Unread | None = UNREAD) -> Batch:
        """Run changes after `after` (of one run, of some runs, or of the runs with a tag), each with the run
        as it is now."""
        where: list[sa.ColumnElement[bool]] = []
        if env_id is not None:
            where.append(runs.c.env_id == env_id)
        if run_id is not None:
            where.append(run_events.c.run_id == run_id)
        if run_ids is not None:
            where.append(run_events.c.run_id.in_(list(run_ids)))
        if tag is not None:
            where.append(run_events.c.run_id.in_(sa.select(run_tags.c.run_id).where(
                run_tags.c.env_id == env_id, run_tags.c.tag == tag)))
        if not logs:
            where.append(run_events.c.kind != "log")
        join = run_events.join(runs, runs.c.id == run_events.c.run_id)
        page = self.events.read(c, after, where, until=until, limit=limit, join=join, horizon=horizon,
                                columns=[*run_events.c, runs.c.env_id, runs.c.tags])
        ids = {r.run_id for r in page.rows if r.kind != "log"}
        mine = [runs.c.env_id == env_id] if env_id is not None else []
        snapshots = ({r.id: to_run(r) for r in c.execute(sa.select(runs).where(runs.c.id.in_(ids), *mine))}
                     if ids else {})
        messages = []
        for r in page.rows:
            status = (r.data or {}).get("status") if r.kind == "status" else None
            snapshot = snapshots.get(r.run_id)
            change = RunChange(cursor=str(Cursor.of(r)), run_id=r.run_id, kind=r.kind, time=utc(r.time),
                               status=status, attempt=r.attempt, level=r.level, message=r.message,
                               run=None if r.kind == "log" else snapshot)
            messages.append(Message(Cursor.of(r), LOG_EVENT if r.kind == "log" else RUN_EVENT,
                                    change.model_dump_json(), r.env_id, r.run_id, frozenset(r.tags or ()),
                                    final=status in FINAL))
        return Batch(messages, Cursor.of(page.rows[-1]) if page.rows else None, page.held_back)

    def stream(self, c: sa.Connection, after: Cursor, *, env_id: str | None = None, run_id: str | None = None,
               name: str | None = None, until: Cursor | None = None, limit: int = 1000,
               horizon: int | Unread | None = UNREAD) -> Batch:
        """Chunks after `after` (of one run's named stream, or all of them)."""
        where = [run_stream_chunks.c.run_id == run_id] if run_id is not None else []
        if env_id is not None:
            where.append(runs.c.env_id == env_id)
        if name is not None:
            where.append(run_stream_chunks.c.name == name)
        join = run_stream_chunks.join(runs, runs.c.id == run_stream_chunks.c.run_id)
        page = self.chunks.read(c, after, where, until=until, limit=limit, join=join, horizon=horizon,
                                columns=[*run_stream_chunks.c, runs.c.env_id])
        messages = [Message(Cursor.of(r), CHUNK_EVENT,
                            StreamChunk(cursor=str(Cursor.of(r)), run_id=r.run_id, name=r.name,
                                        data=r.data).model_dump_json(),
                            r.env_id, r.run_id, frozenset(), stream=r.name) for r in page.rows]
        return Batch(messages, Cursor.of(page.rows[-1]) if page.rows else None, page.held_back)

    def new(self, c: sa.Connection, events_at: Cursor, chunks_at: Cursor) -> tuple[Batch, Batch]:
        """What is new in both tables for the hub: one horizon for the two reads, in one connection (each
        round trip from the hub's thread waits for the GIL behind the fan-out on the event loop)."""
        horizon = self.events.horizon(c)
        return (self.changes(c, events_at, horizon=horizon), self.stream(c, chunks_at, horizon=horizon))

    def run_position(self, c: sa.Connection, env_id: str, run_id: str) -> Cursor:
        """The cursor of the run's last final event (a start for what comes after it)."""
        horizon = self.events.horizon(c)
        stmt = (sa.select(run_events.c.txid, run_events.c.id).join(runs, runs.c.id == run_events.c.run_id)
                .where(run_events.c.run_id == run_id, runs.c.env_id == env_id)
                .order_by(run_events.c.txid.desc(), run_events.c.id.desc()).limit(1))
        if horizon is not None:
            stmt = stmt.where(run_events.c.txid < horizon)
        row = c.execute(stmt).first()
        return Cursor.of(row) if row is not None else Cursor(0, 0)

    def positions(self, c: sa.Connection) -> tuple[Cursor, Cursor]:
        """Where the events and the chunks end now (what is final)."""
        return self.events.end(c), self.chunks.end(c)


def statuses(c: sa.Connection, env_id: str, run_ids: Sequence[str]) -> dict[str, str]:
    """The current status of each of these runs of the environment (missing ones left out)."""
    rows = c.execute(sa.select(runs.c.id, runs.c.status).where(runs.c.id.in_(list(run_ids)), runs.c.env_id == env_id))
    return {r.id: r.status for r in rows}

