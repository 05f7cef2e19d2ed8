"""The attempt protocol: workers claim runs, renew their leases, and report logs, metadata and outcomes."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from outlast._context import apply_metadata_op
from outlast.wire import (
    Assignment,
    AttemptCompletion,
    AttemptOutcome,
    HeartbeatResponse,
    LeasedAttempt,
    ResumeInfo,
    RetryPolicy,
    RunContext,
    RunStatus,
    TaskRunError,
    WorkerReport,
)
from outlast.wire.machines import OUT_OF_MEMORY_ERROR

from ..store import queue, transitions
from ..store.schema import run_events, runs
from .context import EngineContext, ready_run, slot, timeline_event, utc
from .fencing import lock_reported, refuse_stale
from .waits import FinishedRun, Waits

S = RunStatus
HELD = (S.EXECUTING.value, S.WAITING.value)  # statuses in which a node may hold the run (a parked wait)


def backoff_delay(policy: RetryPolicy, failed_attempt: int) -> float:
    """Seconds before retrying after attempt number `failed_attempt` (1-based) failed."""
    delay = min(policy.max_delay, policy.min_delay * policy.factor ** (failed_attempt - 1))
    if policy.randomize:
        delay *= random.uniform(0.75, 1.25)
    return delay


class Attempts:
    def __init__(self, context: EngineContext, waits: Waits) -> None:
        self.context = context
        self.waits = waits

    # --- claim -----------------------------------------------------------------------------

    def claim(self, node_id: str, env_ids: Iterable[str], task_ids: Iterable[str], limit: int,
              versions: Sequence[str] | None = None) -> list[Assignment]:
        """`versions`: the deployed versions the worker runs (None: a working copy, see queue.routed_version)."""
        now = self.context.clock()
        folded = not self.context.db.is_sqlite  # PostgreSQL: the claim's writes in one statement (store/transitions.py)
        with self.context.db.begin() as c:
            chosen = self.context.dequeue(c, env_ids=env_ids, task_ids=task_ids, limit=limit, now=now,
                                          versions=versions, take=not folded)
            if not chosen:
                return []
            started, resumed = (self._start_folded if folded else self._start)(c, chosen, node_id, now)
            resume_info = self.waits.resume_info(c, [r.id for r in resumed]) if resumed else {}
        by_id = {r.id: r for r in (*started, *resumed)}
        return [to_assignment(by_id[r.run_id], resume_info.get(r.run_id)) for r in chosen if r.run_id in by_id]

    def _start(self, c: sa.Connection, chosen: Sequence[sa.Row], node_id: str,
               now: float) -> tuple[list[sa.Row], list[sa.Row]]:
        """Mark the claimed runs EXECUTING on `node_id`: new attempts, and checkpointed attempts that resume.

        Returns the rows of both. A ready row can outlive its run's QUEUED status (a cancel racing a
        delay's end): such runs are not started, and their concurrency slot is given back.
        """
        ids = [r.run_id for r in chosen]
        resuming = [r.run_id for r in chosen if r.resume]  # checkpointed: continue the same attempt
        fresh = [r.run_id for r in chosen if not r.resume]
        params = {"b_node": node_id, "b_lease": now + self.context.lease_seconds, "b_now": now}
        started = c.execute(_START_ATTEMPTS, {"ids": fresh, **params}).all() if fresh else []
        resumed = c.execute(_RESUME_ATTEMPTS, {"ids": resuming, **params}).all() if resuming else []
        started_ids = {r.id for r in started} | {r.id for r in resumed}
        if len(started_ids) < len(ids):
            queue.release(c, [(r.env_id, r.queue, r.concurrency_key) for r in chosen if r.run_id not in started_ids])
        if started_ids:
            c.execute(run_events.insert(), [
                timeline_event(r.id, now, "status", S.EXECUTING, attempt=r.attempts,
                               message=f"attempt {r.attempts} {verb} on {node_id}")
                for verb, rows in (("started", started), ("resumes", resumed)) for r in rows])
        return started, resumed

    def _start_folded(self, c: sa.Connection, chosen: Sequence[sa.Row], node_id: str,
                      now: float) -> tuple[list[sa.Row], list[sa.Row]]:
        """`_start` for rows `queue.claim` only chose: taking them off the queue is part of the one statement."""
        rows = transitions.start_claimed(c, chosen, queue.slots(chosen), node_id=node_id, now=now,
                                         lease_expires_at=now + self.context.lease_seconds,
                                         queued=S.QUEUED.value, executing=S.EXECUTING.value)
        started_ids = {r.id for r in rows}
        if len(started_ids) < len(chosen):
            queue.release(c, [(r.env_id, r.queue, r.concurrency_key) for r in chosen if r.run_id not in started_ids])
        resuming = {r.run_id for r in chosen if r.resume}
        return [r for r in rows if r.id not in resuming], [r for r in rows if r.id in resuming]

    # --- leases ----------------------------------------------------------------------------

    def heartbeat(self, node_id: str, attempts: Sequence[LeasedAttempt], *,
                  env_ids: Iterable[str] | None = None) -> HeartbeatResponse:
        """Extend the leases of live attempts (parked waits included); say which the worker must stop
        (canceled, lost) and which of the waitpoints they wait for in memory are now complete.

        `env_ids` restricts a remote worker to its own environment's runs and waitpoints: another
        environment's run is one to stop, its waitpoints are never read.
        """
        if not attempts:
            return HeartbeatResponse()
        now = self.context.clock()
        ids = [a.run_id for a in attempts]
        scope = [runs.c.id.in_(ids)] + ([runs.c.env_id.in_(list(env_ids))] if env_ids is not None else [])
        with self.context.db.begin() as c:
            c.execute(runs.update().where(*scope, runs.c.status.in_(HELD), runs.c.node_id == node_id)
                      .values(lease_expires_at=now + self.context.lease_seconds))
            rows = {r.id: r for r in c.execute(sa.select(runs.c.id, runs.c.status, runs.c.attempts, runs.c.node_id)
                                               .where(*scope))}
            waiting = [w for a in attempts if a.run_id in rows for w in a.waiting]
            completed = self.waits.completed(c, waiting, env_ids=env_ids) if waiting else []
        stop = [a.run_id for a in attempts
                if (row := rows.get(a.run_id)) is None or row.status not in HELD
                or row.attempts != a.attempt or row.node_id != node_id]
        return HeartbeatResponse(stop=stop, completed=completed)

    # --- reports ---------------------------------------------------------------------------

    def report(self, report: WorkerReport, *, env_ids: Iterable[str] | None = None) -> None:
        """Apply a worker's buffered logs, metadata changes and attempt completions, in that order.

        `env_ids` restricts a remote worker to its own environment's runs.
        """
        now = self.context.clock()
        if not (report.logs or report.metadata or report.completions):
            return
        with self.context.db.begin() as c:
            if env_ids is not None:
                report = _own_runs(c, report, env_ids)
            locked = lock_reported(c, report)
            refuse_stale(report, locked)  # a node cut off past its lease reports about attempts it lost
            if report.logs:
                c.execute(run_events.insert(), [
                    timeline_event(r.run_id, r.time.timestamp(), "log", message=r.message, attempt=r.attempt,
                                   level=r.level, data=r.attributes) for r in report.logs])
            for update in report.metadata:
                _apply_metadata(c, update.run_id, update.ops, now)
            if report.completions:
                self._complete(c, report.completions, locked, now)
                self.context.notify_in(c)  # a finished attempt frees a concurrency slot
        if report.completions:
            self.context.wake(notified=True)

    def _complete(self, c: sa.Connection, completions: Sequence[AttemptCompletion], locked: dict[str, sa.Row],
                  now: float) -> None:
        """End attempts: success, retry with backoff, or a final failure. Stale completions are ignored.
        `locked`: the runs' rows, locked (fencing.lock_reported)."""
        by_id = {done.run_id: done for done in completions}
        rows = [locked[run_id] for run_id in by_id if run_id in locked]
        updates, events, retries, released = [], [], [], []
        finished = []
        for row in rows:
            done = by_id[row.id]
            if row.status not in HELD or row.attempts != done.attempt:
                continue  # canceled meanwhile, or an older attempt's late answer
            if row.status == S.EXECUTING:  # a waiting run gave its slot back when it stopped executing
                released.append(slot(row))
            status, message, delay = _outcome(row, done)
            error = done.error.model_dump() if done.error else None
            machine = _retry_machine(row, done) if delay is not None else row.machine
            if machine != row.machine:
                message += f" on machine {machine}"
            updates.append({
                "b_id": row.id, "b_status": status.value, "b_output": done.output if status is S.COMPLETED else None,
                "b_error": error, "b_execution_ms": row.execution_ms + done.duration_ms,
                # a released attempt never ran: it does not count against max_attempts
                "b_attempts": row.attempts - (done.outcome is AttemptOutcome.RELEASED),
                "b_completed_at": now if status.is_final else None, "b_updated_at": now,
                "b_machine": machine, "b_cpu_ms": _sum(row.cpu_ms, done.cpu_ms),
                "b_peak_memory_bytes": _max(row.peak_memory_bytes, done.peak_memory_bytes),
            })
            events.append(timeline_event(row.id, now, "status", status, attempt=row.attempts, message=message,
                                         level=None if status in (S.COMPLETED, S.QUEUED) else "error",
                                         data=_attempt_data(error, done)))
            if delay is not None:
                retries.append(ready_run(row, now + delay))
            if status.is_final:
                finished.append(FinishedRun(row.id, status, updates[-1]["b_output"], error))
        if not updates:
            return
        if self.context.db.is_sqlite:
            queue.release(c, released)
            c.execute(_COMPLETE_ATTEMPT, updates)
            c.execute(run_events.insert(), events)
        else:  # the same three writes, one statement (store/transitions.py)
            transitions.finish_attempts(c, updates, events, released)
        self.context.enqueue(c, retries)
        if finished:
            self.waits.runs_finished(c, finished, now)

    # --- lost attempts ---------------------------------------------------------------------

    def recover_node(self, node_id: str) -> int:
        """A node restarted: the attempts it was running are gone; end them as crashed (and retry)."""
        with self.context.db.connect() as c:
            ids = c.execute(sa.select(runs.c.id, runs.c.attempts).where(
                runs.c.status.in_(HELD), runs.c.node_id == node_id)).all()
        self.crash(ids, f"node {node_id} restarted while the attempt was executing")
        return len(ids)

    def crash(self, rows: Sequence[Any], reason: str) -> None:
        """End the attempts of `rows` (id, attempts) as crashed: their worker is gone."""
        if not rows:
            return
        error = TaskRunError(type="WorkerLost", message=reason)
        completions = [AttemptCompletion(run_id=r.id, attempt=r.attempts, outcome=AttemptOutcome.CRASHED,
                                         error=error) for r in rows]
        self.report(WorkerReport(completions=completions))


def _own_runs(c: sa.Connection, report: WorkerReport, env_ids: Iterable[str]) -> WorkerReport:
    """The part of `report` about runs of `env_ids`."""
    run_ids = {r.run_id for r in report.logs} | {m.run_id for m in report.metadata} | {
        done.run_id for done in report.completions}
    known = set(c.execute(sa.select(runs.c.id).where(runs.c.id.in_(run_ids), runs.c.env_id.in_(list(env_ids))))
                .scalars())
    return WorkerReport(node_id=report.node_id, logs=[r for r in report.logs if r.run_id in known],
                        metadata=[m for m in report.metadata if m.run_id in known],
                        completions=[d for d in report.completions if d.run_id in known])


def _apply_metadata(c: sa.Connection, run_id: str, ops: Sequence[Any], now: float) -> None:
    current = c.execute(sa.select(runs.c.metadata).where(runs.c.id == run_id).with_for_update()).scalar()
    current = dict(current or {})
    for op in ops:
        try:
            apply_metadata_op(current, op)
        except Exception:  # a wrong-typed increment is refused in the task already; never fail a batch
            continue
    c.execute(runs.update().where(runs.c.id == run_id).values(metadata=current, updated_at=now))


def _outcome(row: sa.Row, done: AttemptCompletion) -> tuple[S, str, float | None]:
    """The run's next status, the timeline message, and the retry delay if it is retried."""
    if done.outcome is AttemptOutcome.OK:
        return S.COMPLETED, f"attempt {row.attempts} completed", None
    if done.outcome is AttemptOutcome.RELEASED:
        return S.QUEUED, "returned to the queue unstarted by its stopping worker", 0.0
    if done.outcome is AttemptOutcome.TIMED_OUT:
        return S.TIMED_OUT, f"exceeded max_duration of {row.max_duration:g}s", None
    failure = f"attempt {row.attempts} {_failure(done.outcome, done.error)}"
    if done.retryable and row.attempts < row.max_attempts:
        delay = backoff_delay(RetryPolicy.model_validate(row.retry), row.attempts)
        return S.QUEUED, f"{failure}; retrying in {delay:.2f}s", delay
    return (S.CRASHED if done.outcome is AttemptOutcome.CRASHED else S.FAILED), failure, None


def _retry_machine(row: sa.Row, done: AttemptCompletion) -> str | None:
    """The machine a retry runs on: the policy's `out_of_memory` preset after running out of memory."""
    if done.error is None or done.error.type != OUT_OF_MEMORY_ERROR:
        return row.machine
    policy = RetryPolicy.model_validate(row.retry).out_of_memory
    return policy.machine if policy is not None and policy.machine else row.machine


def _attempt_data(error: dict[str, Any] | None, done: AttemptCompletion) -> dict[str, Any] | None:
    """The completion event's data: the error, and what the attempt used."""
    data = {"error": error} if error else {}
    if done.cpu_ms is not None:
        data["cpu_ms"] = done.cpu_ms
    if done.peak_memory_bytes is not None:
        data["peak_memory_bytes"] = done.peak_memory_bytes
    return data or None


def _sum(total: int | None, more: int | None) -> int | None:
    return more if total is None else total + (more or 0)


def _max(peak: int | None, more: int | None) -> int | None:
    return more if peak is None else max(peak, more or 0)


def _failure(outcome: AttemptOutcome, error: TaskRunError | None) -> str:
    verb = "crashed" if outcome is AttemptOutcome.CRASHED else "failed"
    return f"{verb}: {error.type}: {error.message}" if error else verb


def to_assignment(row: sa.Row, resume: ResumeInfo | None = None) -> Assignment:
    """What a worker gets for a claimed run: its context, payload and, to continue a checkpoint, where it is."""
    context = RunContext(
        run_id=row.id, attempt=row.attempts, task=row.task_id, env=row.env_id, tags=row.tags,
        version=row.version, queue=row.queue, concurrency_key=row.concurrency_key, machine=row.machine,
        max_duration=row.max_duration, created_at=utc(row.created_at), metadata=row.metadata or {},
    )
    return Assignment(context=context, payload=row.payload, execution_ms=row.execution_ms, resume=resume)


# Statements of the hot paths, built once (SQLAlchemy then only binds values). _COMPLETE_ATTEMPT's writes are
# also store/transitions.py's on PostgreSQL: a column it sets from a constant must be in transitions.CLEARED.
_START_ATTEMPTS = runs.update().where(runs.c.id.in_(sa.bindparam("ids", expanding=True)),
                                      runs.c.status == S.QUEUED.value).values(
    status=S.EXECUTING.value, attempts=runs.c.attempts + 1, node_id=sa.bindparam("b_node"),
    lease_expires_at=sa.bindparam("b_lease"), updated_at=sa.bindparam("b_now"),
    started_at=sa.func.coalesce(runs.c.started_at, sa.bindparam("b_now")), expires_at=None,
).returning(*runs.c)
_RESUME_ATTEMPTS = runs.update().where(runs.c.id.in_(sa.bindparam("ids", expanding=True)),
                                       runs.c.status == S.QUEUED.value).values(
    status=S.EXECUTING.value, node_id=sa.bindparam("b_node"), lease_expires_at=sa.bindparam("b_lease"),
    updated_at=sa.bindparam("b_now"),
).returning(*runs.c)
_COMPLETE_ATTEMPT = runs.update().where(runs.c.id == sa.bindparam("b_id")).values(
    status=sa.bindparam("b_status"),
    output=sa.bindparam("b_output", type_=runs.c.output.type),
    error=sa.bindparam("b_error", type_=runs.c.error.type),
    execution_ms=sa.bindparam("b_execution_ms"),
    attempts=sa.bindparam("b_attempts"),
    completed_at=sa.bindparam("b_completed_at"),
    updated_at=sa.bindparam("b_updated_at"),
    machine=sa.bindparam("b_machine"),
    cpu_ms=sa.bindparam("b_cpu_ms"),
    peak_memory_bytes=sa.bindparam("b_peak_memory_bytes"),
    node_id=None,
    lease_expires_at=None,
)
