"""Run control from the API: cancel a run, replay it, move a delayed run's start."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from outlast.wire import BatchItem, Run, RunHandle, RunStatus

from ..errors import Conflict
from ..store import queue
from ..store.schema import run_events, runs
from .context import EngineContext, slot, timeline_event, utc
from .reads import find_run, to_run
from .scope import EnvScope
from .timers import Timers
from .triggering import Triggering, to_timestamp
from .waits import Waits

if TYPE_CHECKING:
    from ..checkpoint.retention import ImageDeleter

S = RunStatus


class RunControl:
    def __init__(self, context: EngineContext, triggering: Triggering, waits: Waits, timers: Timers,
                 images: ImageDeleter) -> None:
        self.context = context
        self.triggering = triggering
        self.waits = waits
        self.timers = timers
        self.images = images

    def cancel(self, env_id: str, run_id: str) -> Run:
        """Cancel a run that has not finished; a finished run is returned unchanged."""
        now = self.context.clock()
        scope = self.context.scope(env_id)
        with scope.begin() as c:
            find_run(c, scope, run_id)  # the run must be this environment's before anything changes
            _, images = self.cancel_live(c, scope, [run_id], now)
            row = find_run(c, scope, run_id)
        self.images.delete(images)
        self.context.wake()
        return to_run(row)

    def cancel_live(self, c: sa.Connection, scope: EnvScope, run_ids: Sequence[str],
                    now: float) -> tuple[list[str], list[str]]:
        """Cancel those of `run_ids` (runs the caller found in `scope`) that have not finished, in `c`'s
        transaction.

        Returns the ids cancelled, and the checkpoint images to delete once the transaction commits."""
        queue.remove(c, run_ids, env_id=scope.env_id)  # before locking the runs: the order in which a claim takes locks
        rows = c.execute(scope.select(runs).where(runs.c.id.in_(run_ids)).order_by(runs.c.id).with_for_update()).all()
        live = [row for row in rows if not S(row.status).is_final]
        if not live:
            return [], []
        queue.release(c, [slot(row) for row in live if row.status == S.EXECUTING])
        ids = [row.id for row in live]
        c.execute(scope.update(runs).where(runs.c.id.in_(ids)).values(
            status=S.CANCELED.value, completed_at=now, updated_at=now, node_id=None, lease_expires_at=None))
        c.execute(run_events.insert(), [timeline_event(run_id, now, "status", S.CANCELED, message="canceled")
                                        for run_id in ids])
        images = self.waits.drop_checkpoints(c, ids)
        finished = c.execute(scope.select(runs).where(runs.c.id.in_(ids))).all()
        with scope.following_ids(c):  # the waits of these runs' parents, found by child run id
            self.waits.runs_finished(c, finished, now)
        return ids, images

    def delete_images(self, images: Sequence[str]) -> None:
        """Delete checkpoint images `cancel_live` returned, after its transaction committed."""
        self.images.delete(images)

    def replay(self, env_id: str, run_id: str) -> RunHandle:
        """A new run of the same task with the same payload and options (no delay, no idempotency key)."""
        scope = self.context.scope(env_id)
        with scope.connect() as c:
            row = find_run(c, scope, run_id)
        return self.triggering.trigger(env_id, [replay_item(row)], replayed_from=run_id)[0]

    def reschedule(self, env_id: str, run_id: str, delay: float | datetime) -> Run:
        now = self.context.clock()
        until = to_timestamp(delay, now)
        scope = self.context.scope(env_id)
        with scope.begin() as c:
            row = find_run(c, scope, run_id, lock=True)
            if row.status != S.DELAYED:
                raise Conflict(f"run {run_id} is {row.status}; only DELAYED runs can be rescheduled", field="run_id")
            c.execute(scope.update(runs).where(runs.c.id == run_id).values(delay_until=until, updated_at=now))
            c.execute(run_events.insert(), [timeline_event(run_id, now, "rescheduled",
                                                           message=f"delayed until {utc(until).isoformat()}")])
        self.timers.tick()
        with scope.connect() as c:
            return to_run(find_run(c, scope, run_id))


def replay_item(row: sa.Row) -> BatchItem:
    """What a replay of the run `row` triggers: its task, payload and options (no delay, no idempotency key)."""
    options = {"tags": row.tags, "metadata": {}, "concurrency_key": row.concurrency_key,
               "priority": row.priority, "max_attempts": row.max_attempts, "max_duration": row.max_duration,
               "machine": row.machine, "queue": {"name": row.queue}}
    return BatchItem(task=row.task_id, payload=row.payload, options=options)
