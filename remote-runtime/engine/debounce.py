"""Debounce: triggers of one task with the same key, within a delay of each other, become one run.

Each (environment, task, key) has one `debounce_keys` row naming the run of its open window. A
trigger takes a transaction-scoped lock on its key first (PostgreSQL advisory lock; SQLite has one
writer anyway), so two runtimes on one database never both start a window:

- trailing: the window's run is DELAYED until `delay` after the last trigger (never past the
  first trigger + `max_delay`); a later trigger moves that start and puts its payload, metadata and
  tags on the run with a conditional UPDATE (`status = 'DELAYED' AND delay_until > now`), so a run
  the timers promoted (or someone cancelled) meanwhile is left alone and a new window begins.
- leading: the first trigger's run is queued at once; later triggers within the window (which each
  one extends, up to `max_delay`) return it.

The first trigger of a window sets its mode and deadline; each trigger's own `delay` extends it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

import sqlalchemy as sa

from outlast.wire import BatchItem, DebounceMode, DebounceOptions, RunHandle, RunStatus, TaskManifest

from ..store import queue
from ..store.schema import debounce_keys, run_events, run_tags, runs
from .context import EngineContext, timeline_event, utc
from .scope import EnvScope

PRUNE_EVERY = 60.0  # seconds between deletions of closed windows' rows
KEEP_CLOSED = 3600.0  # how long a closed window's row stays (for support: which run a key last had)
Group = tuple[str, str]  # task id, debounce key


class RunBatch(Protocol):
    """What debouncing needs of `triggering.NewRuns` (named here, not imported: triggering imports this module)."""

    c: sa.Connection
    env_id: str
    now: float
    scope: EnvScope

    def add(self, item: BatchItem, manifest: TaskManifest, version: str, *, replayed_from: str | None = None,
            event_data: dict[str, Any] | None = None) -> str: ...


def _lock_id(env_id: str, task_id: str, key: str) -> int:
    digest = hashlib.blake2b(f"{env_id}\0{task_id}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


_LOCK = sa.text("SELECT pg_advisory_xact_lock(:lock_id)")


class Debounces:
    """The debounced items of one trigger transaction: `place` each, then `flush` once the batch is written."""

    def __init__(self, batch: RunBatch, items: Sequence[BatchItem]) -> None:
        self.batch = batch
        self.c, self.env_id, self.now, self.scope = batch.c, batch.env_id, batch.now, batch.scope
        self._placed: dict[Group, str] = {}
        self._later: list[tuple[BatchItem, DebounceOptions]] = []
        groups = sorted({(item.task, item.options.debounce.key) for item in items if item.options.debounce})
        if self.c.dialect.name == "postgresql":
            for task_id, key in groups:  # in one order, so two batches sharing keys cannot deadlock
                self.c.execute(_LOCK, {"lock_id": _lock_id(self.env_id, task_id, key)})

    def place(self, item: BatchItem, manifest: TaskManifest, version: str, *,
              replayed_from: str | None = None) -> RunHandle:
        """The run `item` collapses into: the open window's, or a new one that opens a window."""
        options = item.options.debounce
        assert options is not None
        group = (item.task, options.key)
        if group in self._placed:  # the same key earlier in this batch: its run is written with the batch
            self._later.append((item, options))
            return RunHandle(id=self._placed[group], task=item.task)
        row = self._window(group)
        run_id = self._join(row, item, options) if row is not None and self.now < row.window_until else None
        if run_id is None:
            run_id = self._open(item, options, manifest, version, replayed_from)
        self._placed[group] = run_id
        return RunHandle(id=run_id, task=item.task)

    def flush(self) -> None:
        """Apply the batch's repeated keys to the runs written meanwhile."""
        for item, options in self._later:
            row = self._window((item.task, options.key))
            if row is not None:
                self._join(row, item, options)

    def _window(self, group: Group) -> sa.Row | None:
        task_id, key = group
        return self.c.execute(self.scope.select(debounce_keys).where(
            debounce_keys.c.task_id == task_id, debounce_keys.c.key == key)).first()

    def _join(self, row: sa.Row, item: BatchItem, options: DebounceOptions) -> str | None:
        """Add the trigger to the open window of `row`; None when its run can no longer take it."""
        until = self.now + options.delay
        if row.deadline is not None:
            until = min(until, row.deadline)
        if until <= self.now:
            return None
        if row.mode == DebounceMode.TRAILING:
            moved = self.c.execute(self.scope.update(runs).where(
                runs.c.id == row.run_id, runs.c.status == RunStatus.DELAYED.value,
                runs.c.delay_until > self.now,
            ).values(payload=item.payload, metadata=item.options.metadata, tags=item.options.tags,
                     delay_until=until, updated_at=self.now))
            if moved.rowcount == 0:
                return None
            self._retag(row.run_id, item.options.tags)
            message = f"debounced: a trigger with key {options.key!r} moved the start to {utc(until).isoformat()}"
        else:
            status = self.c.execute(self.scope.select(runs.c.status).where(runs.c.id == row.run_id)).scalar()
            if status is None or status == RunStatus.CANCELED.value:  # cancelled: the key starts afresh
                return None
            message = f"debounced: a trigger with key {options.key!r} returned this run"
        window = self.scope.update(debounce_keys).where(debounce_keys.c.task_id == row.task_id,
                                                        debounce_keys.c.key == row.key)
        self.c.execute(window.values(window_until=until))
        self.c.execute(run_events.insert(), [timeline_event(row.run_id, self.now, "debounced", message=message,
                                                            data={"debounce_key": options.key})])
        return row.run_id

    def _open(self, item: BatchItem, options: DebounceOptions, manifest: TaskManifest,
              version: str, replayed_from: str | None) -> str:
        """A new run for a new window: delayed by `delay` (trailing) or queued now (leading)."""
        delay = options.delay if options.mode == DebounceMode.TRAILING else None
        first = item.model_copy(update={"options": item.options.model_copy(update={"debounce": None,
                                                                                     "delay": delay})})
        run_id = self.batch.add(first, manifest, version, replayed_from=replayed_from,
                                event_data={"debounce_key": options.key})
        values = {"mode": options.mode.value, "run_id": run_id, "first_at": self.now,
                  "window_until": self.now + options.delay,
                  "deadline": self.now + options.max_delay if options.max_delay is not None else None}
        # An upsert, not an update of `row`: the upkeep may have deleted a long-closed window's row meanwhile.
        self.c.execute(queue.upsert(self.c, debounce_keys).values(env_id=self.env_id, task_id=item.task,
                                                                  key=options.key, **values)
                       .on_conflict_do_update(index_elements=["env_id", "task_id", "key"], set_=values))
        return run_id

    def _retag(self, run_id: str, tags: Sequence[str]) -> None:
        self.c.execute(self.scope.delete(run_tags).where(run_tags.c.run_id == run_id))
        if tags:
            self.c.execute(run_tags.insert(), [{"run_id": run_id, "tag": tag, "env_id": self.env_id} for tag in tags])


class DebounceUpkeep:
    """Deletes the rows of windows closed for a while, at most once a minute (from the maintenance loop)."""

    def __init__(self, context: EngineContext) -> None:
        self.context = context
        self._next = 0.0

    def prune(self) -> int:
        now = self.context.clock()
        if now < self._next:
            return 0
        self._next = now + PRUNE_EVERY
        with self.context.db.connect() as c:  # look first: most minutes there is nothing, and no write lock
            if c.execute(sa.select(debounce_keys.c.key).where(
                    debounce_keys.c.window_until < now - KEEP_CLOSED).limit(1)).first() is None:
                return 0
        with self.context.db.begin() as c:
            return c.execute(debounce_keys.delete().where(debounce_keys.c.window_until < now - KEEP_CLOSED)).rowcount

