"""Retention of finished runs: `OUTLAST_RUN_RETENTION` seconds after a run finished, it is deleted.

Unset or 0 (the default) keeps every run, as before this setting. Claims never read history (the
ready queue holds only ready runs, and claims reach `runs` by primary key), so retention is about
the store's size and the speed of listing and searching runs, not of the queue.

A run goes with what hangs off it (timeline events, tags, streams: foreign keys ON DELETE CASCADE;
wait and checkpoint rows, which a finished run has no more, by id). A run whose idempotency key is
still live is kept until the key expires, so a repeated trigger still finds it. The timers sweep at
most every `SWEEP_SECONDS`, in batches of `BATCH` runs (one transaction each) for at most
`SWEEP_BUDGET` seconds, so a large backlog of history is deleted over several sweeps, never in one
long transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa

from ..settings import env_whole_number
from .db import Database
from .schema import run_checkpoints, run_waits, runs

SETTING = "OUTLAST_RUN_RETENTION"
SWEEP_SECONDS = 10.0
SWEEP_BUDGET = 1.0
BATCH = 1000


def delete_finished(db: Database, *, finished_before: float, now: float, batch: int = BATCH) -> int:
    """Delete up to `batch` runs that finished before `finished_before` (and whose idempotency key, if
    any, expired by `now`), oldest first; returns how many."""
    with db.begin() as c:
        ids = c.execute(sa.select(runs.c.id).where(
            runs.c.completed_at.is_not(None), runs.c.completed_at < finished_before,
            sa.or_(runs.c.idempotency_key.is_(None), runs.c.idempotency_expires_at <= now),
        ).order_by(runs.c.completed_at).limit(batch).with_for_update(skip_locked=True)).scalars().all()
        if ids:
            for table in (run_waits, run_checkpoints):
                c.execute(table.delete().where(table.c.run_id.in_(ids)))
            c.execute(runs.delete().where(runs.c.id.in_(ids)))
    return len(ids)


class RunRetention:
    """Deletes finished runs older than `seconds` (0: never), when a sweep is due."""

    def __init__(self, db: Database, clock: Callable[[], float], seconds: int) -> None:
        self.db, self.clock, self.seconds = db, clock, seconds
        self.deleted = 0
        self._next_sweep = 0.0

    @classmethod
    def from_env(cls, db: Database, clock: Callable[[], float]) -> RunRetention:
        """The retention `OUTLAST_RUN_RETENTION` sets (whole seconds; ValueError naming it otherwise)."""
        return cls(db, clock, env_whole_number(SETTING, 0))

    def sweep_if_due(self) -> int:
        """Sweep if retention is on and the last sweep was `SWEEP_SECONDS` ago; returns the runs deleted."""
        now = self.clock()
        if not self.seconds or now < self._next_sweep:
            return 0
        self._next_sweep = now + SWEEP_SECONDS
        deleted, began = 0, time.monotonic()
        while time.monotonic() - began < SWEEP_BUDGET:
            count = delete_finished(self.db, finished_before=now - self.seconds, now=now)
            deleted += count
            if count < BATCH:
                break
        self.deleted += deleted
        return deleted
