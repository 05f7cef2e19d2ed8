"""Checkpointed attempts whose node was lost between claiming them and restoring them.

A claim of a checkpointed run keeps its checkpoint row (waits.resume_info only counts the claim):
the row goes when the run checkpoints again, resumes in memory, or ends. A supervisor that dies
after the claim leaves the run EXECUTING on a lease nobody renews; when that lease runs out, such a
run is not crashed but put back on the queue to be restored by another node, same attempt, as long
as its image is still in the store (the node that restores it deletes the image once the process
reconnected, so a missing image means the restore happened, and the attempt is lost as any other).
A run claimed MAX_RESTORE_CLAIMS times without a restore (an image that kills its node, say) is
crashed instead, as today.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from outlast.wire import CheckpointMode, RunStatus

from ..checkpoint.retention import ImageDeleter
from ..store import queue
from ..store.schema import run_checkpoints, run_events, run_waits, runs
from .context import EngineContext, ready_run, slot, timeline_event

log = logging.getLogger("outlast.engine")
S = RunStatus
MAX_RESTORE_CLAIMS = 3
CLAIMS = "restore_claims"  # in the checkpoint row's detail: how often it was claimed since it was made


class UnrestoredCheckpoints:
    def __init__(self, context: EngineContext, images: ImageDeleter) -> None:
        self.context = context
        self.images = images

    def take_back(self, lost: Sequence[Any]) -> list[Any]:
        """Of `lost` (rows with id, attempts: attempts whose lease ran out), put back on the queue those
        whose checkpoint was claimed and never restored; returns the others (to be crashed)."""
        if not lost:
            return list(lost)
        ids = [r.id for r in lost]
        with self.context.db.connect() as c:
            candidates = c.execute(sa.select(run_checkpoints.c.run_id, run_checkpoints.c.image_key,
                                             run_checkpoints.c.detail).join(runs, runs.c.id == run_checkpoints.c.run_id)
                                   .where(run_checkpoints.c.run_id.in_(ids), runs.c.status == S.EXECUTING.value,
                                          run_checkpoints.c.attempt == runs.c.attempts,
                                          run_checkpoints.c.mode == CheckpointMode.CRIU.value)).all()
        unrestored = {row.run_id for row in candidates if row.image_key and self._image_left(row.image_key)
                      and int((row.detail or {}).get(CLAIMS, 0)) < MAX_RESTORE_CLAIMS}
        if not unrestored:
            return list(lost)
        now = self.context.clock()
        with self.context.db.begin() as c:
            rows = c.execute(sa.select(runs).where(runs.c.id.in_(list(unrestored)), runs.c.status == S.EXECUTING.value,
                                                   runs.c.lease_expires_at <= now).with_for_update()).all()
            if rows:
                queue.release(c, [slot(r) for r in rows])
                c.execute(runs.update().where(runs.c.id.in_([r.id for r in rows])).values(
                    status=S.QUEUED.value, node_id=None, lease_expires_at=None, updated_at=now))
                c.execute(run_events.insert(), [timeline_event(
                    r.id, now, "status", S.QUEUED, attempt=r.attempts,
                    message=f"node {r.node_id} was lost before it restored the checkpoint; "
                            "another node restores it") for r in rows])
                self.context.enqueue(c, [ready_run(r, now, resume=True) for r in rows])
                self.context.notify_in(c)
        if rows:
            self.context.wake(notified=True)
        taken = {r.id for r in rows}
        return [r for r in lost if r.id not in taken]

    def _image_left(self, key: str) -> bool:
        """Whether the image is still stored; without a store here (or one that does not answer), the
        node that claims the run finds out (a failed restore crashes the attempt, as before)."""
        store = self.images.store
        if store is None:
            return True
        try:
            return store.exists(key)
        except Exception as exc:
            log.warning("could not tell whether checkpoint image %s is stored: %s", key, exc)
            return True


def count_claims(c: sa.Connection, rows: Sequence[Any]) -> None:
    """The checkpoint rows of runs just claimed to resume (rows of run_checkpoints) were claimed once more."""
    for row in rows:
        detail = dict(row.detail or {})
        detail[CLAIMS] = int(detail.get(CLAIMS, 0)) + 1
        c.execute(run_checkpoints.update().where(run_checkpoints.c.run_id == row.run_id).values(detail=detail))


def forget_waits_and_checkpoints(c: sa.Connection, run_ids: Sequence[str]) -> None:
    """Runs ended: their wait links and checkpoint rows go (one statement on PostgreSQL: a run's
    completion costs no more statements for the checkpoint row kept since its restore)."""
    if c.dialect.name == "sqlite":  # no data-modifying WITH there
        c.execute(_WAITS_GONE, {"ids": run_ids})
        c.execute(_CHECKPOINTS_GONE, {"ids": run_ids})
        return
    c.execute(_WAITS_AND_CHECKPOINTS_GONE, {"ids": run_ids})


# Built once: every completion runs them, and building an IN clause costs more than running it on SQLite.
_WAITS_GONE = run_waits.delete().where(run_waits.c.run_id.in_(sa.bindparam("ids", expanding=True)))
_CHECKPOINTS_GONE = run_checkpoints.delete().where(run_checkpoints.c.run_id.in_(sa.bindparam("ids", expanding=True)))
_WAITS_AND_CHECKPOINTS_GONE = _CHECKPOINTS_GONE.add_cte(_WAITS_GONE.returning(run_waits.c.run_id).cte("waits_gone"))
