"""Reading runs: one run, a filtered page of runs, a run's timeline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from outlast.wire import Run, RunEvent, RunList, RunStatus, TaskRunError

from ..errors import RunNotFound
from ..store.schema import run_events, run_tags, runs
from .context import EngineContext, utc
from .scope import EnvScope


def find_run(c: sa.Connection, scope: EnvScope, run_id: str, *, lock: bool = False) -> sa.Row:
    """The run's row, if it is the scope's environment's (RunNotFound otherwise); `lock` locks it."""
    stmt = scope.select(runs).where(runs.c.id == run_id)
    row = c.execute(stmt.with_for_update() if lock else stmt).first()
    if row is None:
        raise RunNotFound(f"run {run_id!r} not found", field="run_id")
    return row


@dataclass(frozen=True)
class RunFilter:
    """Which runs a page shows. Tags: the API matches runs with any of them, the dashboard runs with all."""

    status: Sequence[str] = ()
    task: Sequence[str] = ()
    tag: Sequence[str] = ()
    version: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    every_tag: bool = False


class RunReads:
    def __init__(self, context: EngineContext) -> None:
        self.context = context
        self.db = context.db

    def run_env(self, run_id: str) -> str:
        """Which environment a run is in (a task's own calls, which name their run and nothing else)."""
        with self.db.connect() as c:
            env_id = c.execute(sa.select(runs.c.env_id).where(runs.c.id == run_id)).scalar()
        if env_id is None:
            raise RunNotFound(f"run {run_id!r} not found", field="run_id")
        return env_id

    def retrieve(self, env_id: str, run_id: str) -> Run:
        scope = self.context.scope(env_id)
        with scope.connect() as c:
            return to_run(find_run(c, scope, run_id))

    def list_runs(self, env_id: str, *, status: Sequence[str] = (), task: Sequence[str] = (),
                  tag: Sequence[str] = (), created_after: datetime | None = None,
                  created_before: datetime | None = None, limit: int = 50, cursor: str | None = None) -> RunList:
        where = RunFilter(status=status, task=task, tag=tag, created_after=created_after, created_before=created_before)
        return self.search(env_id, where, limit=limit, cursor=cursor)

    def search(self, env_id: str, where: RunFilter, *, limit: int = 50, cursor: str | None = None) -> RunList:
        """A page of runs, newest first; `cursor` is the last id of the previous page."""
        scope = self.context.scope(env_id)
        with scope.connect() as c:
            rows = c.execute(matching_runs(scope, where, cursor=cursor).limit(limit + 1)).all()
        page = [to_run(row) for row in rows[:limit]]
        return RunList(data=page, next_cursor=page[-1].id if len(rows) > limit else None)

    def events(self, env_id: str, run_id: str, *, after: int = 0) -> list[RunEvent]:
        scope = self.context.scope(env_id)
        with scope.connect() as c:
            find_run(c, scope, run_id)  # run_events has no env_id: the run found here is its parent
            rows = c.execute(sa.select(run_events).where(run_events.c.run_id == run_id, run_events.c.id > after)
                             .order_by(run_events.c.id)).all()
        return [RunEvent(id=r.id, run_id=r.run_id, time=utc(r.time), kind=r.kind, attempt=r.attempt,
                         level=r.level, message=r.message, data=r.data or {}) for r in rows]


def matching_runs(scope: EnvScope, where: RunFilter, *, cursor: str | None = None) -> sa.Select:
    """The scope's runs that `where` matches, newest first; `cursor`: only those with a lower id."""
    stmt = scope.select(runs).order_by(runs.c.id.desc())
    conditions = [
        runs.c.status.in_(where.status) if where.status else None,
        runs.c.task_id.in_(where.task) if where.task else None,
        runs.c.version == where.version if where.version else None,
        runs.c.created_at >= where.created_after.timestamp() if where.created_after else None,
        runs.c.created_at < where.created_before.timestamp() if where.created_before else None,
        runs.c.id < cursor if cursor else None,
    ]
    tagged = scope.select(run_tags.c.run_id)
    if where.every_tag:
        conditions += [runs.c.id.in_(tagged.where(run_tags.c.tag == tag)) for tag in where.tag]
    elif where.tag:
        conditions.append(runs.c.id.in_(tagged.where(run_tags.c.tag.in_(where.tag))))
    return stmt.where(*(cond for cond in conditions if cond is not None))


def to_run(row: sa.Row) -> Run:
    return Run(
        id=row.id, task=row.task_id, env=row.env_id, status=RunStatus(row.status), payload=row.payload,
        output=row.output, error=TaskRunError.model_validate(row.error) if row.error else None,
        attempts=row.attempts, max_attempts=row.max_attempts, tags=row.tags or [], metadata=row.metadata or {},
        queue=row.queue, concurrency_key=row.concurrency_key, priority=row.priority,
        idempotency_key=row.idempotency_key, version=row.version, machine=row.machine,
        max_duration=row.max_duration, execution_ms=row.execution_ms, replayed_from=row.replayed_from,
        cpu_ms=row.cpu_ms, peak_memory_bytes=row.peak_memory_bytes,
        created_at=utc(row.created_at), updated_at=utc(row.updated_at), delay_until=utc(row.delay_until),
        expires_at=utc(row.expires_at), started_at=utc(row.started_at), completed_at=utc(row.completed_at),
    )
