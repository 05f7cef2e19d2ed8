"""What every part of the engine shares: the store, the clock, the lease, wake-ups and the ready queue.

Triggering, attempts, timers, waits and schedules each get one `EngineContext` instead of reaching
into each other; the helpers below build the rows they all write (timeline events, ready entries).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from outlast.wire import RunStatus

from ..store import queue
from ..store.db import Database
from ..store.notify import WORK_CHANNEL
from ..store.queue import ReadyRun
from ..store.statistics import GrowthAnalyser
from .scope import EnvScope, install_guard

_NOTIFY_WORK = sa.text(f"SELECT pg_notify('{WORK_CHANNEL}', '')")


class EngineContext:
    def __init__(self, db: Database, *, lease_seconds: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._listeners: list[Callable[[], None]] = []
        self._floors = queue.SequenceFloors()
        self.statistics = GrowthAnalyser(db.engine)  # ANALYZE of the hot tables as they grow
        install_guard(db.engine)

    def scope(self, env_id: str) -> EnvScope:
        """Environment `env_id`'s view of the store: what every caller-facing read and write goes through."""
        return EnvScope(self.db, env_id)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """`callback` runs (from any thread) whenever new work may be claimable."""
        self._listeners.append(callback)

    def wake(self, *, notified: bool = False) -> None:
        """Tell waiting claimers, here and in other runtimes on this database, that work may be claimable.

        `notified`: the committed transaction sent the notification itself (`notify_in`)."""
        self.statistics.flush()  # called after the commits that add work: ANALYZE sees the new rows
        for callback in self._listeners:
            callback()
        if not self.db.is_sqlite and not notified:  # other runtimes on this database: see notify.PostgresListener
            with self.db.engine.connect() as c:
                c.execute(_NOTIFY_WORK)
                c.commit()

    def notify_in(self, c: sa.Connection) -> None:
        """Wake other runtimes' claimers when `c`'s transaction commits (PostgreSQL delivers NOTIFY on commit):
        no second connection and transaction after it, as `wake()` alone takes."""
        if not self.db.is_sqlite:
            c.execute(_NOTIFY_WORK)

    def enqueue(self, c: sa.Connection, ready: Sequence[ReadyRun]) -> None:
        """Put runs on the ready queue, in `c`'s transaction."""
        queue.enqueue(c, ready, self._floors)
        self.statistics.inserted("run_queue", len(ready))

    def dequeue(self, c: sa.Connection, *, env_ids: Iterable[str], task_ids: Iterable[str], limit: int, now: float,
                versions: Sequence[str] | None, take: bool = True) -> list[sa.Row]:
        """Take ready runs off the queue for a worker, in `c`'s transaction (see `queue.claim`)."""
        return queue.claim(c, env_ids=env_ids, task_ids=task_ids, limit=limit, now=now, floors=self._floors,
                           versions=versions, take=take)


def ready_run(row: Any, available_at: float, *, resume: bool = False) -> ReadyRun:
    """The ready-queue entry of a run (a row of `runs`, or the dict about to be inserted as one)."""
    get = row.get if isinstance(row, Mapping) else functools.partial(getattr, row)
    return ReadyRun(run_id=get("id"), env_id=get("env_id"), task_id=get("task_id"), queue=get("queue"),
                    concurrency_key=get("concurrency_key"), priority=get("priority"), available_at=available_at,
                    resume=resume, version=queue.routed_version(get("version")))


def timeline_event(run_id: str, now: float, kind: str, status: str | None = None, *, message: str = "",
                   attempt: int | None = None, level: str | None = None, data: dict | None = None) -> dict[str, Any]:
    """A row of `run_events`; a status change carries its status in `data`."""
    payload = dict(data or {})
    if status is not None:
        payload["status"] = str(status.value if isinstance(status, RunStatus) else status)
    return {"run_id": run_id, "time": now, "kind": kind, "attempt": attempt, "level": level,
            "message": message, "data": payload}


def slot(row: Any) -> queue.KeyTuple:
    """The concurrency slot (environment, queue, concurrency key) a run holds while it executes."""
    return (row.env_id, row.queue, row.concurrency_key or "")


def utc(value: float | None) -> datetime | None:
    """A stored UNIX time as an aware datetime."""
    return None if value is None else datetime.fromtimestamp(value, UTC)
