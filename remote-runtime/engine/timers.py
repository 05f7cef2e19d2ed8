"""Time-driven transitions: delays that end, TTLs that run out, leases nobody renews, waits that come due."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from outlast.wire import RunStatus

from ..store import queue
from ..store.retention import RunRetention
from ..store.schema import run_events, runs
from .attempts import HELD, Attempts
from .context import EngineContext, ready_run, timeline_event
from .unrestored import UnrestoredCheckpoints
from .waits import FinishedRun, Waits

S = RunStatus


class Timers:
    def __init__(self, context: EngineContext, attempts: Attempts, waits: Waits,
                 unrestored: UnrestoredCheckpoints) -> None:
        self.context = context
        self.attempts = attempts
        self.waits = waits
        self.unrestored = unrestored
        self.retention = RunRetention.from_env(context.db, context.clock)  # finished runs deleted (if set)

    def tick(self, batch: int = 500) -> None:
        """Promote due delayed runs, expire runs past their TTL, reclaim attempts whose lease ran out, complete
        due waits, and delete finished runs past their retention."""
        now = self.context.clock()
        # Look first, on a read connection: most ticks find nothing, and need no write lock.
        with self.context.db.connect() as c:
            delayed_due = c.execute(sa.select(runs.c.id).where(
                runs.c.status == S.DELAYED.value, runs.c.delay_until <= now).limit(1)).first() is not None
            past_ttl = c.execute(sa.select(runs.c.id).where(
                runs.c.status == S.QUEUED.value, runs.c.expires_at <= now).limit(batch)).scalars().all()
            lost = c.execute(sa.select(runs.c.id, runs.c.attempts).where(
                runs.c.status.in_(HELD), runs.c.lease_expires_at <= now).limit(batch)).all()
        if delayed_due and self._promote_delayed(now, batch):
            self.context.wake()
        if past_ttl:
            self._expire(now, past_ttl)
        lost = self.unrestored.take_back(lost)  # claimed to be restored, and never restored: restore elsewhere
        self.attempts.crash(lost, "the worker stopped renewing its lease (node lost)")
        self.waits.complete_due(batch)
        self.retention.sweep_if_due()

    def _promote_delayed(self, now: float, batch: int) -> int:
        with self.context.db.begin() as c:
            due = c.execute(sa.select(runs).where(runs.c.status == S.DELAYED.value, runs.c.delay_until <= now)
                            .order_by(runs.c.delay_until).limit(batch).with_for_update(skip_locked=True)).all()
            for row in due:
                c.execute(runs.update().where(runs.c.id == row.id).values(
                    status=S.QUEUED.value, updated_at=now, expires_at=now + row.ttl if row.ttl else None))
            if due:
                c.execute(run_events.insert(), [timeline_event(r.id, now, "status", S.QUEUED, message="delay elapsed")
                                                for r in due])
                self.context.enqueue(c, [ready_run(r, now) for r in due])
        return len(due)

    def _expire(self, now: float, candidates: Sequence[str]) -> None:
        with self.context.db.begin() as c:
            expired = queue.remove(c, candidates)  # only those no worker claimed meanwhile
            if not expired:
                return
            c.execute(runs.update().where(runs.c.id.in_(expired)).values(
                status=S.EXPIRED.value, completed_at=now, updated_at=now))
            c.execute(run_events.insert(), [timeline_event(run_id, now, "status", S.EXPIRED,
                                                           message="ttl elapsed before the run started")
                                            for run_id in expired])
            self.waits.runs_finished(c, [FinishedRun(run_id, S.EXPIRED) for run_id in expired], now)
