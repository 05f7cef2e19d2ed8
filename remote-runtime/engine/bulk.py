"""Bulk actions: cancel or replay every run matching a filter, as a durable job worked through in chunks.

Creating a job records its filter and the ids of the runs it matches then (`bulk_action_runs`, one
INSERT ... SELECT with the runs pages' own query, `reads.matching_runs`): runs created later, the
job's own replays among them, are never its. The maintenance loop then takes one chunk at a time,
newest first: in one transaction it locks the job row (SKIP LOCKED, so two runtimes never work on
one job at once), cancels or replays the chunk's runs, deletes their ids from `bulk_action_runs` and
moves the counters and `cursor`. A runtime killed mid-chunk rolls that chunk back whole, and the
next one resumes with the runs still listed: no run is cancelled or replayed twice.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from outlast.wire import BatchItem, BulkAction, BulkActionCreate, BulkActionKind, BulkActionState, BulkFilter, RunStatus

from ..errors import EngineError, RunNotFound
from ..store.ids import new_run_id
from ..store.schema import bulk_action_runs, bulk_actions, runs
from .context import EngineContext, utc
from .control import RunControl, replay_item
from .reads import RunFilter, matching_runs
from .triggering import Triggering

DEFAULT_CHUNK = int(os.environ.get("OUTLAST_BULK_CHUNK", "500"))  # runs per transaction
B = BulkActionState


_OPEN_JOB = sa.select(bulk_actions.c.id).where(bulk_actions.c.state != B.COMPLETED.value).limit(1)


class BulkActionNotFound(RunNotFound):
    code = "bulk_action_not_found"


def run_filter(where: BulkFilter) -> RunFilter:
    return RunFilter(status=[s.value for s in where.status], task=where.task, tag=where.tag, version=where.version,
                     created_after=where.created_after, created_before=where.created_before)


def to_bulk_action(row: Any) -> BulkAction:
    return BulkAction(id=row.id, env=row.env_id, action=BulkActionKind(row.action),
                      filter=BulkFilter.model_validate(row.filter), state=B(row.state), total=row.total,
                      processed=row.processed, succeeded=row.succeeded, skipped=row.skipped, error=row.error,
                      created_at=utc(row.created_at), updated_at=utc(row.updated_at),
                      completed_at=utc(row.completed_at))


class BulkActions:
    def __init__(self, context: EngineContext, control: RunControl, triggering: Triggering, *,
                 chunk: int = DEFAULT_CHUNK) -> None:
        self.context = context
        self.control = control
        self.triggering = triggering
        self.chunk = chunk

    def create(self, env_id: str, request: BulkActionCreate) -> BulkAction:
        """Record a job for the runs of `env_id` matching the filter now; the maintenance loop does the rest."""
        scope = self.context.scope(env_id)
        return self._record(env_id, request, lambda job_id: matching_runs(scope, run_filter(request.filter))
                            .order_by(None).with_only_columns(sa.literal(job_id), runs.c.id))

    def create_for_runs(self, env_id: str, action: BulkActionKind, run_ids: list[str]) -> BulkAction:
        """A job for these runs of `env_id` (a selection, as the dashboard's): each is handled when its chunk
        comes, if it still can be (a run that ended meanwhile is skipped, as with a filter)."""
        # The filter the chunks check again: any status (the selection is what the job's runs are).
        request = BulkActionCreate(action=action, filter=BulkFilter(status=list(RunStatus)))
        scope = self.context.scope(env_id)
        return self._record(env_id, request, lambda job_id: scope.select(sa.literal(job_id), runs.c.id).where(
            runs.c.id.in_(run_ids)))

    def _record(self, env_id: str, request: BulkActionCreate, chosen: Callable[[str], sa.Select]) -> BulkAction:
        """The job row and the ids of its runs (`chosen(job_id)` selects (job_id, run_id) pairs), in one transaction."""
        now = self.context.clock()
        job_id = "bulk_" + new_run_id(now).removeprefix("run_")
        scope = self.context.scope(env_id)
        matching = chosen(job_id)
        with scope.begin() as c:
            c.execute(bulk_action_runs.insert().from_select(["job_id", "run_id"], matching))
            total = c.execute(sa.select(sa.func.count()).where(bulk_action_runs.c.job_id == job_id)).scalar_one()
            row = {"id": job_id, "env_id": env_id, "action": request.action.value,
                   "filter": request.filter.model_dump(mode="json"),
                   "state": (B.PENDING if total else B.COMPLETED).value, "total": total, "processed": 0,
                   "succeeded": 0, "skipped": 0, "cursor": None, "error": None,
                   "created_at": now, "updated_at": now, "completed_at": None if total else now}
            c.execute(bulk_actions.insert().values(**row))
        return to_bulk_action(SimpleNamespace(**row))

    def retrieve(self, env_id: str, job_id: str) -> BulkAction:
        scope = self.context.scope(env_id)
        with scope.connect() as c:
            row = c.execute(scope.select(bulk_actions).where(bulk_actions.c.id == job_id)).first()
        if row is None:
            raise BulkActionNotFound(f"bulk action {job_id!r} not found", field="bulk_action_id")
        return to_bulk_action(row)

    def step(self) -> bool:
        """Work through one chunk of the oldest unfinished job no other runtime holds; False when there is none."""
        now = self.context.clock()
        images: list[str] = []
        with self.context.db.connect() as c:  # look first: most ticks there is no job, and need no write lock
            if c.execute(_OPEN_JOB).first() is None:
                return False
        with self.context.db.begin() as c:
            job = c.execute(sa.select(bulk_actions).where(bulk_actions.c.state != B.COMPLETED.value)
                            .order_by(bulk_actions.c.id).limit(1).with_for_update(skip_locked=True)).first()
            if job is None:
                return False
            ids = c.execute(sa.select(bulk_action_runs.c.run_id).where(bulk_action_runs.c.job_id == job.id)
                            .order_by(bulk_action_runs.c.run_id.desc()).limit(self.chunk)).scalars().all()
            # Those that still match (a QUEUED run that started meanwhile is not cancelled as one).
            where, scope = run_filter(BulkFilter.model_validate(job.filter)), self.context.scope(job.env_id)
            rows = c.execute(matching_runs(scope, where).where(runs.c.id.in_(ids))).all() if ids else []
            if job.action == BulkActionKind.CANCEL:
                cancelled, images = self.control.cancel_live(c, scope, [row.id for row in rows], now)
                succeeded, error = len(cancelled), None
            else:
                succeeded, error = self._replay(c, job.env_id, rows, now)
            if ids:
                c.execute(bulk_action_runs.delete().where(bulk_action_runs.c.job_id == job.id,
                                                          bulk_action_runs.c.run_id.in_(ids)))
            done = len(ids) < self.chunk
            c.execute(bulk_actions.update().where(bulk_actions.c.id == job.id).values(
                state=(B.COMPLETED if done else B.RUNNING).value, cursor=ids[-1] if ids else job.cursor,
                processed=job.processed + len(ids), succeeded=job.succeeded + succeeded,
                skipped=job.skipped + len(ids) - succeeded, error=error or job.error, updated_at=now,
                completed_at=now if done else None))
        self.control.delete_images(images)
        if succeeded:
            self.context.wake()
        return True

    def _replay(self, c: sa.Connection, env_id: str, rows: list[sa.Row], now: float) -> tuple[int, str | None]:
        """Replay `rows` in `c`'s transaction; a run whose task is gone or whose payload no longer fits is skipped."""
        items = [replay_item(row) for row in rows]
        manifests = self.triggering.manifests(c, env_id, items)
        batch = self.triggering.new_runs(c, env_id, [], now)
        replayed, error = 0, None
        for row, item in zip(rows, items, strict=True):
            reason = self._unreplayable(env_id, item, manifests)
            if reason is not None:
                error = f"run {row.id}: {reason}"
                continue
            batch.add(item, *manifests[item.task], replayed_from=row.id)
            replayed += 1
        batch.write()
        return replayed, error

    def _unreplayable(self, env_id: str, item: BatchItem, manifests: dict) -> str | None:
        if item.task not in manifests:
            return f"task {item.task!r} is not registered any more"
        try:
            self.triggering.validate(env_id, manifests[item.task][0], item.payload)
        except EngineError as exc:
            return exc.message
        return None

