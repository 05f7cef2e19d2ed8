"""The run engine: every status transition of a run is one transaction plus a timeline event.

Methods are synchronous (SQLAlchemy Core); the API calls them from its thread pool and the
supervisor through `asyncio.to_thread`. Waiting claimers are woken through `add_listener`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import jsonschema
import sqlalchemy as sa

from outlast._context import apply_metadata_op
from outlast.wire import (
    Assignment,
    AttemptCompletion,
    AttemptOutcome,
    BatchItem,
    HeartbeatResponse,
    LeasedAttempt,
    ResumeInfo,
    RetryPolicy,
    Run,
    RunContext,
    RunEvent,
    RunHandle,
    RunList,
    RunStatus,
    TaskManifest,
    TaskRunError,
    WorkerReport,
)

from ..errors import Conflict, InvalidPayload, RunNotFound, UnknownTask
from ..store import queue
from ..store.db import Database
from ..store.ids import new_run_id
from ..store.notify import WORK_CHANNEL
from ..store.queue import ReadyRun
from ..store.schema import environments, run_events, run_tags, runs, tasks
from .waits import Waits

DEFAULT_IDEMPOTENCY_TTL = 30 * 86400
S = RunStatus
log = logging.getLogger("outlast.engine")


def backoff_delay(policy: RetryPolicy, failed_attempt: int) -> float:
    """Seconds before retrying after attempt number `failed_attempt` (1-based) failed."""
    delay = min(policy.max_delay, policy.min_delay * policy.factor ** (failed_attempt - 1))
    if policy.randomize:
        delay *= random.uniform(0.75, 1.25)
    return delay


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _timestamp(value: float | datetime | None, now: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp() if value.tzinfo else value.replace(tzinfo=UTC).timestamp()
    return now + value


class RunEngine:
    def __init__(self, db: Database, *, lease_seconds: float = 30.0, clock: Callable[[], float] = time.time,
                 public_url: str = "http://127.0.0.1:7070", checkpoint_store: Any = None) -> None:
        self.db = db
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.checkpoint_store = checkpoint_store  # deletes images of runs that will never resume
        self._listeners: list[Callable[[], None]] = []
        self._validators: dict[tuple[str, str, str], jsonschema.protocols.Validator] = {}
        self._floors = queue.SequenceFloors()
        self.waits = Waits(self, public_url)
        # Called as hook(connection, env_ids, version, manifests) inside register_tasks' transaction
        # (the scheduler keeps declarative schedules in step with the registered code).
        self.register_hooks: list[Callable[[sa.Connection, Sequence[str], str, Sequence[TaskManifest]], None]] = []
        # Called as version_manifests(connection, env_id, version) -> {task id: (manifest, version)} for
        # triggers locked to a version: a deployed version declares its own tasks, current or not.
        self.version_manifests: Callable[[sa.Connection, str, str], dict[str, tuple[TaskManifest, str]]] | None = None

    # --- wake-ups ------------------------------------------------------------------------

    def add_listener(self, callback: Callable[[], None]) -> None:
        """`callback` runs (from any thread) whenever new work may be claimable."""
        self._listeners.append(callback)

    def _wake(self) -> None:
        for callback in self._listeners:
            callback()
        if not self.db.is_sqlite:  # other runtimes on this database: see notify.PostgresListener
            with self.db.engine.connect() as c:
                c.execute(_NOTIFY_WORK)
                c.commit()

    # --- tasks ---------------------------------------------------------------------------

    def register_tasks(self, env_ids: Iterable[str], version: str, manifests: Sequence[TaskManifest]) -> None:
        now = self.clock()
        env_ids = list(env_ids)
        with self.db.begin() as c:
            for env_id in env_ids:
                for manifest in manifests:
                    queue_name = manifest.queue.name if manifest.queue else f"task/{manifest.id}"
                    values = {"version": version, "queue": queue_name, "manifest": manifest.model_dump(mode="json"),
                              "updated_at": now}
                    stmt = queue.upsert(c, tasks).values(env_id=env_id, id=manifest.id, **values)
                    c.execute(stmt.on_conflict_do_update(index_elements=["env_id", "id"], set_=values))
                    if manifest.queue and manifest.queue.concurrency_limit is not None:
                        queue.set_queue_limit(c, env_id, queue_name, manifest.queue.concurrency_limit)
                    else:
                        queue.ensure_queue(c, env_id, queue_name)
                c.execute(environments.update().where(environments.c.id == env_id).values(current_version=version))
            for hook in self.register_hooks:
                hook(c, env_ids, version, manifests)
        self._wake()

    def list_tasks(self, env_id: str) -> list[sa.Row]:
        with self.db.connect() as c:
            return c.execute(sa.select(tasks).where(tasks.c.env_id == env_id).order_by(tasks.c.id)).all()

    # --- triggering ----------------------------------------------------------------------

    def trigger(self, env_id: str, items: Sequence[BatchItem], *, replayed_from: str | None = None) -> list[RunHandle]:
        """Create one run per item, all or none: any unknown task or invalid payload refuses the batch."""
        now = self.clock()
        try:
            handles = self._trigger(env_id, items, now, replayed_from)
        except sa.exc.IntegrityError:
            # Another trigger with the same idempotency key committed first: this time we see it.
            handles = self._trigger(env_id, items, now, replayed_from)
        self._wake()
        return handles

    def _trigger(self, env_id: str, items: Sequence[BatchItem], now: float,
                 replayed_from: str | None) -> list[RunHandle]:
        prefix = "items.{}." if len(items) > 1 else ""
        with self.db.begin() as c:
            manifests = self._manifests(c, env_id, items, prefix)
            for index, item in enumerate(items):
                self._validate(env_id, manifests[item.task][0], item.payload, prefix.format(index))
            handles, ready, new_runs, tags, events = [], [], [], [], []
            keyed: dict[tuple[str, str], str] = {}  # idempotency keys used earlier in this batch
            for item in items:
                key = item.options.idempotency_key
                cached = keyed.get((item.task, key)) if key else None
                cached = cached or self._idempotent_hit(c, env_id, item, now)
                if cached:
                    handles.append(RunHandle(id=cached, task=item.task, is_cached=True))
                    continue
                row = self._new_run(env_id, item, *manifests[item.task], now, replayed_from)
                if key:
                    keyed[(item.task, key)] = row["id"]
                new_runs.append(row)
                tags.extend({"run_id": row["id"], "tag": tag, "env_id": env_id} for tag in item.options.tags)
                events.append(self._event(row["id"], now, "status", row["status"],
                                          message="queued" if row["status"] == S.QUEUED else "delayed"))
                if row["status"] == S.QUEUED:
                    ready.append(self._ready(row, now))
                if item.options.queue and item.options.queue.concurrency_limit is not None:
                    queue.set_queue_limit(c, env_id, row["queue"], item.options.queue.concurrency_limit)
                elif item.options.queue:
                    queue.ensure_queue(c, env_id, row["queue"])
                handles.append(RunHandle(id=row["id"], task=item.task))
            if new_runs:
                c.execute(runs.insert(), new_runs)
                c.execute(run_events.insert(), events)
            if tags:
                c.execute(run_tags.insert(), tags)
            queue.enqueue(c, ready, self._floors)
        return handles

    def _manifests(self, c: sa.Connection, env_id: str, items: Sequence[BatchItem],
                   prefix: str) -> dict[str, tuple[TaskManifest, str]]:
        task_ids = {item.task for item in items}
        rows = c.execute(sa.select(tasks.c.id, tasks.c.version, tasks.c.manifest)
                         .where(tasks.c.env_id == env_id, tasks.c.id.in_(task_ids))).all()
        found = {row.id: (TaskManifest.model_validate(row.manifest), row.version) for row in rows}
        if self.version_manifests is not None:
            for version in {item.options.version for item in items if item.options.version}:
                found.update(self.version_manifests(c, env_id, version))
        for index, item in enumerate(items):
            if item.task not in found:
                raise UnknownTask(f"task {item.task!r} is not registered in environment {env_id!r}",
                                  field=prefix.format(index) + "task")
        return found

    def _validate(self, env_id: str, manifest: TaskManifest, payload: Any, prefix: str) -> None:
        if manifest.payload_schema is None:
            return
        key = (env_id, manifest.id, repr(manifest.payload_schema))
        validator = self._validators.get(key)
        if validator is None:
            cls = jsonschema.validators.validator_for(manifest.payload_schema)
            validator = self._validators[key] = cls(manifest.payload_schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(payload))
        if error is not None:
            path = [str(p) for p in error.absolute_path]
            if error.validator == "required" and isinstance(error.instance, dict):
                # Name the missing property itself, as the SDK's client-side check does.
                missing = [name for name in error.validator_value if name not in error.instance]
                path += missing[:1]
            field = prefix + ".".join(["payload", *path])
            raise InvalidPayload(f"payload for task {manifest.id!r} is invalid: {field}: {error.message}",
                                 field=field)

    def _idempotent_hit(self, c: sa.Connection, env_id: str, item: BatchItem, now: float) -> str | None:
        key = item.options.idempotency_key
        if not key:
            return None
        row = c.execute(sa.select(runs.c.id, runs.c.idempotency_expires_at).where(
            runs.c.env_id == env_id, runs.c.task_id == item.task, runs.c.idempotency_key == key)).first()
        if row is None:
            return None
        if row.idempotency_expires_at is None or row.idempotency_expires_at > now:
            return row.id
        c.execute(runs.update().where(runs.c.id == row.id).values(idempotency_key=None))  # key expired
        return None

    def _new_run(self, env_id: str, item: BatchItem, manifest: TaskManifest, version: str, now: float,
                 replayed_from: str | None) -> dict[str, Any]:
        options = item.options
        delay_until = _timestamp(options.delay, now)
        status = S.DELAYED if delay_until is not None and delay_until > now else S.QUEUED
        queue_options = options.queue or manifest.queue
        idempotency_ttl = options.idempotency_key_ttl or DEFAULT_IDEMPOTENCY_TTL
        return {
            "id": new_run_id(now),
            "env_id": env_id,
            "task_id": item.task,
            "status": status.value,
            "payload": item.payload,
            "attempts": 0,
            "max_attempts": options.max_attempts or manifest.retry.max_attempts,
            "retry": manifest.retry.model_dump(),
            "tags": options.tags,
            "metadata": options.metadata,
            "queue": queue_options.name if queue_options else f"task/{item.task}",
            "concurrency_key": options.concurrency_key,
            "priority": options.priority,
            "idempotency_key": options.idempotency_key,
            "idempotency_expires_at": now + idempotency_ttl if options.idempotency_key else None,
            "version": options.version or version,
            "machine": options.machine or manifest.machine,
            "max_duration": options.max_duration or manifest.max_duration,
            "ttl": options.ttl,
            "execution_ms": 0,
            "replayed_from": replayed_from,
            "created_at": now,
            "updated_at": now,
            "delay_until": delay_until if status == S.DELAYED else None,
            "expires_at": now + options.ttl if options.ttl and status == S.QUEUED else None,
        }

    @staticmethod
    def _ready(row: Any, available_at: float) -> ReadyRun:
        get = row.get if isinstance(row, dict) else row._mapping.get
        return ReadyRun(run_id=get("id"), env_id=get("env_id"), task_id=get("task_id"), queue=get("queue"),
                        concurrency_key=get("concurrency_key"), priority=get("priority"), available_at=available_at,
                        version=queue.routed_version(get("version")))

    @staticmethod
    def _event(run_id: str, now: float, kind: str, status: str | None = None, *, message: str = "",
               attempt: int | None = None, level: str | None = None, data: dict | None = None) -> dict[str, Any]:
        payload = dict(data or {})
        if status is not None:
            payload["status"] = str(status.value if isinstance(status, S) else status)
        return {"run_id": run_id, "time": now, "kind": kind, "attempt": attempt, "level": level,
                "message": message, "data": payload}

    # --- reading -------------------------------------------------------------------------

    def _row(self, c: sa.Connection, env_id: str, run_id: str, *, lock: bool = False) -> sa.Row:
        stmt = sa.select(runs).where(runs.c.id == run_id, runs.c.env_id == env_id)
        row = c.execute(stmt.with_for_update() if lock else stmt).first()
        if row is None:
            raise RunNotFound(f"run {run_id!r} not found", field="run_id")
        return row

    def run_env(self, run_id: str) -> str:
        with self.db.connect() as c:
            env_id = c.execute(sa.select(runs.c.env_id).where(runs.c.id == run_id)).scalar()
        if env_id is None:
            raise RunNotFound(f"run {run_id!r} not found", field="run_id")
        return env_id

    def retrieve(self, env_id: str, run_id: str) -> Run:
        with self.db.connect() as c:
            return to_run(self._row(c, env_id, run_id))

    def list_runs(self, env_id: str, *, status: Sequence[str] = (), task: Sequence[str] = (),
                  tag: Sequence[str] = (), created_after: datetime | None = None,
                  created_before: datetime | None = None, limit: int = 50, cursor: str | None = None) -> RunList:
        stmt = sa.select(runs).where(runs.c.env_id == env_id).order_by(runs.c.id.desc()).limit(limit + 1)
        if status:
            stmt = stmt.where(runs.c.status.in_(status))
        if task:
            stmt = stmt.where(runs.c.task_id.in_(task))
        if tag:
            tagged = sa.select(run_tags.c.run_id).where(run_tags.c.env_id == env_id, run_tags.c.tag.in_(tag))
            stmt = stmt.where(runs.c.id.in_(tagged))
        if created_after:
            stmt = stmt.where(runs.c.created_at >= created_after.timestamp())
        if created_before:
            stmt = stmt.where(runs.c.created_at < created_before.timestamp())
        if cursor:
            stmt = stmt.where(runs.c.id < cursor)
        with self.db.connect() as c:
            rows = c.execute(stmt).all()
        page = [to_run(row) for row in rows[:limit]]
        return RunList(data=page, next_cursor=page[-1].id if len(rows) > limit else None)

    def events(self, env_id: str, run_id: str, *, after: int = 0) -> list[RunEvent]:
        with self.db.connect() as c:
            self._row(c, env_id, run_id)
            rows = c.execute(sa.select(run_events).where(run_events.c.run_id == run_id, run_events.c.id > after)
                             .order_by(run_events.c.id)).all()
        return [RunEvent(id=r.id, run_id=r.run_id, time=_dt(r.time), kind=r.kind, attempt=r.attempt,
                         level=r.level, message=r.message, data=r.data or {}) for r in rows]

    # --- control -------------------------------------------------------------------------

    def cancel(self, env_id: str, run_id: str) -> Run:
        """Cancel a run that has not finished; a finished run is returned unchanged."""
        now = self.clock()
        with self.db.begin() as c:
            self._row(c, env_id, run_id)  # the run must be this environment's before anything changes
            queue.remove(c, [run_id])  # before locking the run: the order in which a claim takes locks
            row = self._row(c, env_id, run_id, lock=True)
            if S(row.status).is_final:
                return to_run(row)
            if row.status == S.EXECUTING:
                queue.release(c, [_key(row)])
            c.execute(runs.update().where(runs.c.id == run_id).values(
                status=S.CANCELED.value, completed_at=now, updated_at=now, node_id=None, lease_expires_at=None))
            c.execute(run_events.insert(), [self._event(run_id, now, "status", S.CANCELED, message="canceled")])
            images = self.waits.drop_checkpoints(c, [run_id])
            row = self._row(c, env_id, run_id)
            self.waits.runs_finished(c, [row], now)
        self.delete_images(images)
        self._wake()
        return to_run(row)

    def delete_images(self, keys: Sequence[str]) -> None:
        for key in keys:
            if self.checkpoint_store is None:
                log.warning("checkpoint image %s is not deleted: this runtime has no checkpoint store", key)
                continue
            try:
                self.checkpoint_store.delete(key)
            except Exception:
                log.exception("could not delete checkpoint image %s", key)

    def replay(self, env_id: str, run_id: str) -> RunHandle:
        """A new run of the same task with the same payload and options (no delay, no idempotency key)."""
        with self.db.connect() as c:
            row = self._row(c, env_id, run_id)
        options = {"tags": row.tags, "metadata": {}, "concurrency_key": row.concurrency_key,
                   "priority": row.priority, "max_attempts": row.max_attempts, "max_duration": row.max_duration,
                   "machine": row.machine, "queue": {"name": row.queue}}
        item = BatchItem(task=row.task_id, payload=row.payload, options=options)
        return self.trigger(env_id, [item], replayed_from=run_id)[0]

    def reschedule(self, env_id: str, run_id: str, delay: float | datetime) -> Run:
        now = self.clock()
        until = _timestamp(delay, now)
        with self.db.begin() as c:
            row = self._row(c, env_id, run_id, lock=True)
            if row.status != S.DELAYED:
                raise Conflict(f"run {run_id} is {row.status}; only DELAYED runs can be rescheduled", field="run_id")
            c.execute(runs.update().where(runs.c.id == run_id).values(delay_until=until, updated_at=now))
            c.execute(run_events.insert(), [self._event(run_id, now, "rescheduled",
                                                        message=f"delayed until {_dt(until).isoformat()}")])
        self.tick()
        return self.retrieve(env_id, run_id)

    # --- workers -------------------------------------------------------------------------

    def claim(self, node_id: str, env_ids: Iterable[str], task_ids: Iterable[str], limit: int,
              versions: Sequence[str] | None = None) -> list[Assignment]:
        """`versions`: the deployed versions the worker runs (None: a working copy, see queue.routed_version)."""
        now = self.clock()
        with self.db.begin() as c:
            chosen = queue.claim(c, env_ids=env_ids, task_ids=task_ids, limit=limit, now=now, floors=self._floors,
                                 versions=versions)
            if not chosen:
                return []
            ids = [r.run_id for r in chosen]
            resuming = [r.run_id for r in chosen if r.resume]  # checkpointed: continue the same attempt
            params = {"b_node": node_id, "b_lease": now + self.lease_seconds, "b_now": now}
            # A ready row can outlive its run's QUEUED status (a cancel racing a delay's end): such
            # runs are not started, and their concurrency slot is given back.
            started = c.execute(_START_ATTEMPTS, {"ids": ids, **params}).all() if len(resuming) < len(ids) else []
            resumed = c.execute(_RESUME_ATTEMPTS, {"ids": resuming, **params}).all() if resuming else []
            started_ids = {r.id for r in started} | {r.id for r in resumed}
            if len(started_ids) < len(ids):
                queue.release(c, [(r.env_id, r.queue, r.concurrency_key) for r in chosen
                                  if r.run_id not in started_ids])
            if started_ids:
                c.execute(run_events.insert(), [
                    self._event(r.id, now, "status", S.EXECUTING, attempt=r.attempts,
                                message=f"attempt {r.attempts} {verb} on {node_id}")
                    for verb, rows in (("started", started), ("resumes", resumed)) for r in rows])
            resume_info = self.waits.resume_info(c, [r.id for r in resumed]) if resumed else {}
        by_id = {r.id: r for r in (*started, *resumed)}
        return [_assignment(by_id[run_id], resume_info.get(run_id)) for run_id in ids if run_id in by_id]

    def heartbeat(self, node_id: str, attempts: Sequence[LeasedAttempt]) -> HeartbeatResponse:
        """Extend the leases of live attempts (parked waits included); say which the worker must stop
        (canceled, lost) and which of the waitpoints they wait for in memory are now complete."""
        if not attempts:
            return HeartbeatResponse()
        now = self.clock()
        ids = [a.run_id for a in attempts]
        with self.db.begin() as c:
            c.execute(runs.update().where(runs.c.id.in_(ids), runs.c.status.in_(_HELD), runs.c.node_id == node_id)
                      .values(lease_expires_at=now + self.lease_seconds))
            rows = {r.id: r for r in c.execute(sa.select(runs.c.id, runs.c.status, runs.c.attempts, runs.c.node_id)
                                               .where(runs.c.id.in_(ids)))}
            waiting = [w for a in attempts for w in a.waiting]
            completed = self.waits.completed(c, waiting) if waiting else []
        stop = [a.run_id for a in attempts
                if (row := rows.get(a.run_id)) is None or row.status not in _HELD
                or row.attempts != a.attempt or row.node_id != node_id]
        return HeartbeatResponse(stop=stop, completed=completed)

    def report(self, report: WorkerReport, *, env_ids: Iterable[str] | None = None) -> None:
        """Apply a worker's buffered logs, metadata changes and attempt completions, in that order.

        `env_ids` restricts a remote worker to its own environment's runs.
        """
        now = self.clock()
        if not (report.logs or report.metadata or report.completions):
            return
        with self.db.begin() as c:
            if env_ids is not None:
                run_ids = {r.run_id for r in report.logs} | {m.run_id for m in report.metadata} | {
                    done.run_id for done in report.completions}
                known = set(c.execute(sa.select(runs.c.id).where(
                    runs.c.id.in_(run_ids), runs.c.env_id.in_(list(env_ids)))).scalars())
                report = WorkerReport(logs=[r for r in report.logs if r.run_id in known],
                                      metadata=[m for m in report.metadata if m.run_id in known],
                                      completions=[d for d in report.completions if d.run_id in known])
            if report.logs:
                c.execute(run_events.insert(), [
                    self._event(r.run_id, r.time.timestamp(), "log", message=r.message, attempt=r.attempt,
                                level=r.level, data=r.attributes) for r in report.logs])
            for update in report.metadata:
                self._apply_metadata(c, update.run_id, update.ops, now)
            if report.completions:
                self._complete(c, report.completions, now)
        if report.completions:
            self._wake()  # a finished attempt frees a concurrency slot

    def _apply_metadata(self, c: sa.Connection, run_id: str, ops: Sequence[Any], now: float) -> None:
        current = c.execute(sa.select(runs.c.metadata).where(runs.c.id == run_id).with_for_update()).scalar()
        current = dict(current or {})
        for op in ops:
            try:
                apply_metadata_op(current, op)
            except Exception:  # a wrong-typed increment is refused in the task already; never fail a batch
                continue
        c.execute(runs.update().where(runs.c.id == run_id).values(metadata=current, updated_at=now))

    def _complete(self, c: sa.Connection, completions: Sequence[AttemptCompletion], now: float) -> None:
        """End attempts: success, retry with backoff, or a final failure. Stale completions are ignored."""
        by_id = {done.run_id: done for done in completions}
        rows = c.execute(_LOCK_RUNS, {"ids": list(by_id)}).all()
        updates, events, retries, released = [], [], [], []
        finished = []
        for row in rows:
            done = by_id[row.id]
            if row.status not in _HELD or row.attempts != done.attempt:
                continue  # canceled meanwhile, or an older attempt's late answer
            if row.status == S.EXECUTING:  # a waiting run gave its slot back when it stopped executing
                released.append(_key(row))
            status, message, delay = self._outcome(row, done)
            error = done.error.model_dump() if done.error else None
            updates.append({
                "b_id": row.id, "b_status": status.value, "b_output": done.output if status is S.COMPLETED else None,
                "b_error": error, "b_execution_ms": row.execution_ms + done.duration_ms,
                # a released attempt never ran: it does not count against max_attempts
                "b_attempts": row.attempts - (done.outcome is AttemptOutcome.RELEASED),
                "b_completed_at": now if status.is_final else None, "b_updated_at": now,
            })
            events.append(self._event(row.id, now, "status", status, attempt=row.attempts, message=message,
                                      level=None if status in (S.COMPLETED, S.QUEUED) else "error",
                                      data={"error": error} if error else None))
            if delay is not None:
                retries.append(self._ready(row, now + delay))
            if status.is_final:
                finished.append(_Finished(row.id, status, updates[-1]["b_output"], error))
        if not updates:
            return
        queue.release(c, released)
        c.execute(_COMPLETE_ATTEMPT, updates)
        c.execute(run_events.insert(), events)
        queue.enqueue(c, retries, self._floors)
        if finished:
            self.waits.runs_finished(c, finished, now)

    @staticmethod
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

    def recover_node(self, node_id: str) -> int:
        """A node restarted: the attempts it was running are gone; end them as crashed (and retry)."""
        with self.db.connect() as c:
            ids = c.execute(sa.select(runs.c.id, runs.c.attempts).where(
                runs.c.status.in_(_HELD), runs.c.node_id == node_id)).all()
        self._crash(ids, f"node {node_id} restarted while the attempt was executing")
        return len(ids)

    def _crash(self, rows: Sequence[sa.Row], reason: str) -> None:
        if not rows:
            return
        error = TaskRunError(type="WorkerLost", message=reason)
        completions = [AttemptCompletion(run_id=r.id, attempt=r.attempts, outcome=AttemptOutcome.CRASHED,
                                         error=error) for r in rows]
        self.report(WorkerReport(completions=completions))

    # --- time-driven transitions ---------------------------------------------------------

    def tick(self, batch: int = 500) -> None:
        """Promote due delayed runs, expire runs past their TTL, and reclaim attempts whose lease ran out."""
        now = self.clock()
        # Look first, on a read connection: most ticks find nothing, and need no write lock.
        with self.db.connect() as c:
            delayed_due = c.execute(sa.select(runs.c.id).where(
                runs.c.status == S.DELAYED.value, runs.c.delay_until <= now).limit(1)).first() is not None
            past_ttl = c.execute(sa.select(runs.c.id).where(
                runs.c.status == S.QUEUED.value, runs.c.expires_at <= now).limit(batch)).scalars().all()
            lost = c.execute(sa.select(runs.c.id, runs.c.attempts).where(
                runs.c.status.in_(_HELD), runs.c.lease_expires_at <= now).limit(batch)).all()
        if delayed_due and self._promote_delayed(now, batch):
            self._wake()
        if past_ttl:
            self._expire(now, past_ttl)
        self._crash(lost, "the worker stopped renewing its lease (node lost)")
        self.waits.complete_due(batch)

    def _promote_delayed(self, now: float, batch: int) -> int:
        with self.db.begin() as c:
            due = c.execute(sa.select(runs).where(runs.c.status == S.DELAYED.value, runs.c.delay_until <= now)
                            .order_by(runs.c.delay_until).limit(batch).with_for_update(skip_locked=True)).all()
            for row in due:
                c.execute(runs.update().where(runs.c.id == row.id).values(
                    status=S.QUEUED.value, updated_at=now, expires_at=now + row.ttl if row.ttl else None))
            if due:
                c.execute(run_events.insert(), [self._event(r.id, now, "status", S.QUEUED, message="delay elapsed")
                                                for r in due])
                queue.enqueue(c, [self._ready(r, now) for r in due], self._floors)
        return len(due)

    def _expire(self, now: float, candidates: Sequence[str]) -> None:
        with self.db.begin() as c:
            expired = queue.remove(c, candidates)  # only those no worker claimed meanwhile
            if not expired:
                return
            c.execute(runs.update().where(runs.c.id.in_(expired)).values(
                status=S.EXPIRED.value, completed_at=now, updated_at=now))
            c.execute(run_events.insert(), [self._event(run_id, now, "status", S.EXPIRED,
                                                        message="ttl elapsed before the run started")
                                            for run_id in expired])
            self.waits.runs_finished(c, [_Finished(run_id, S.EXPIRED) for run_id in expired], now)


_NOTIFY_WORK = sa.text(f"SELECT pg_notify('{WORK_CHANNEL}', '')")
# Statements of the hot paths, built once (SQLAlchemy then only binds values).
_LOCK_RUNS = sa.select(runs).where(runs.c.id.in_(sa.bindparam("ids", expanding=True))).with_for_update()
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
_HELD = (S.EXECUTING.value, S.WAITING.value)  # statuses in which a node may hold the run (a parked wait)
_COMPLETE_ATTEMPT = runs.update().where(runs.c.id == sa.bindparam("b_id")).values(
    status=sa.bindparam("b_status"),
    output=sa.bindparam("b_output", type_=runs.c.output.type),
    error=sa.bindparam("b_error", type_=runs.c.error.type),
    execution_ms=sa.bindparam("b_execution_ms"),
    attempts=sa.bindparam("b_attempts"),
    completed_at=sa.bindparam("b_completed_at"),
    updated_at=sa.bindparam("b_updated_at"),
    node_id=None,
    lease_expires_at=None,
)


def _failure(outcome: AttemptOutcome, error: TaskRunError | None) -> str:
    verb = "crashed" if outcome is AttemptOutcome.CRASHED else "failed"
    return f"{verb}: {error.type}: {error.message}" if error else verb


def _key(row: sa.Row) -> queue.KeyTuple:
    return (row.env_id, row.queue, row.concurrency_key or "")


class _Finished(NamedTuple):
    id: str
    status: S
    output: Any = None
    error: Any = None


def _assignment(row: sa.Row, resume: ResumeInfo | None = None) -> Assignment:
    context = RunContext(
        run_id=row.id, attempt=row.attempts, task=row.task_id, env=row.env_id, tags=row.tags,
        version=row.version, queue=row.queue, concurrency_key=row.concurrency_key, machine=row.machine,
        max_duration=row.max_duration, created_at=_dt(row.created_at), metadata=row.metadata or {},
    )
    return Assignment(context=context, payload=row.payload, execution_ms=row.execution_ms, resume=resume)


def to_run(row: sa.Row) -> Run:
    return Run(
        id=row.id, task=row.task_id, env=row.env_id, status=S(row.status), payload=row.payload,
        output=row.output, error=TaskRunError.model_validate(row.error) if row.error else None,
        attempts=row.attempts, max_attempts=row.max_attempts, tags=row.tags or [], metadata=row.metadata or {},
        queue=row.queue, concurrency_key=row.concurrency_key, priority=row.priority,
        idempotency_key=row.idempotency_key, version=row.version, machine=row.machine,
        max_duration=row.max_duration, execution_ms=row.execution_ms, replayed_from=row.replayed_from,
        created_at=_dt(row.created_at), updated_at=_dt(row.updated_at), delay_until=_dt(row.delay_until),
        expires_at=_dt(row.expires_at), started_at=_dt(row.started_at), completed_at=_dt(row.completed_at),
    )
