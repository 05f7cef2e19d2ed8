"""Triggering: checking what is asked for (known task, valid payload) and inserting new runs.

`NewRuns` is the one insert path of new runs: the API's triggers, replays and child runs go
through `Triggering.trigger`, and the scheduler fills a `NewRuns` itself inside the transaction
that moves its schedules on (many runs per transaction, skipping a bad tick instead of refusing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import jsonschema
import sqlalchemy as sa

from outlast.wire import BatchItem, RunHandle, RunStatus, TaskManifest

from ..errors import EngineError, InvalidPayload, UnknownTask
from ..store import queue
from ..store.ids import new_run_id
from ..store.multirow import insert_rows
from ..store.schema import run_events, run_tags, runs, tasks
from .context import EngineContext, ready_run, timeline_event
from .debounce import Debounces
from .trigger_groups import TriggerCall, TriggerGroups

DEFAULT_IDEMPOTENCY_TTL = 30 * 86400
S = RunStatus
Manifests = dict[str, tuple[TaskManifest, str]]  # task id -> (manifest, version)
# version_manifests(connection, env_id, version) -> the tasks a deployed version declares, for
# triggers locked to a version: a deployed version declares its own tasks, current or not.
VersionManifests = Callable[[sa.Connection, str, str], Manifests]


def to_timestamp(value: float | datetime | None, now: float) -> float | None:
    """A delay (seconds from `now`) or a moment, as UNIX seconds."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp() if value.tzinfo else value.replace(tzinfo=UTC).timestamp()
    return now + value


class Triggering:
    def __init__(self, context: EngineContext, version_manifests: VersionManifests | None = None) -> None:
        self.context = context
        self.version_manifests = version_manifests
        self._validators: dict[tuple[str, str, str], jsonschema.protocols.Validator] = {}
        self.groups = TriggerGroups(self._write_group)

    def trigger(self, env_id: str, items: Sequence[BatchItem], *, replayed_from: str | None = None) -> list[RunHandle]:
        """Create one run per item, all or none: any unknown task or invalid payload refuses the batch.

        A single item (not a replay, not debounced) shares its transaction with concurrent ones: trigger_groups.py."""
        if len(items) == 1 and replayed_from is None and items[0].options.debounce is None:
            return [self.groups.trigger(env_id, items[0])]
        return self._trigger_alone(env_id, items, replayed_from)

    def _trigger_alone(self, env_id: str, items: Sequence[BatchItem], replayed_from: str | None) -> list[RunHandle]:
        now = self.context.clock()
        try:
            handles = self._trigger(env_id, items, now, replayed_from)
        except sa.exc.IntegrityError:
            # Another trigger with the same idempotency key committed first: this time we see it.
            handles = self._trigger(env_id, items, now, replayed_from)
        self.context.wake(notified=True)  # NewRuns.write notified other runtimes in the transaction
        return handles

    def _write_group(self, calls: Sequence[TriggerCall]) -> None:
        """The runs of single trigger calls of one environment, as one batch in one transaction."""
        env_id = calls[0].env_id
        try:
            handles = self._trigger(env_id, [call.item for call in calls], self.context.clock(), None)
        except (EngineError, sa.exc.IntegrityError) as exc:
            if len(calls) == 1 and isinstance(exc, EngineError):
                raise
            # A call is refused, or another runtime took an idempotency key meanwhile: each call on its own,
            # for its own answer (a batch is all or none).
            for call in calls:
                try:
                    call.handle = self._trigger_alone(env_id, [call.item], None)[0]
                except Exception as refused:
                    call.error = refused
            return
        for call, handle in zip(calls, handles, strict=True):
            call.handle = handle
        self.context.wake(notified=True)

    def _trigger(self, env_id: str, items: Sequence[BatchItem], now: float,
                 replayed_from: str | None) -> list[RunHandle]:
        prefix = "items.{}." if len(items) > 1 else ""
        with self.context.scope(env_id).begin() as c:
            manifests = self.manifests(c, env_id, items)
            for index, item in enumerate(items):
                if item.task not in manifests:
                    raise UnknownTask(f"task {item.task!r} is not registered in environment {env_id!r}",
                                      field=prefix.format(index) + "task")
            for index, item in enumerate(items):
                self.validate(env_id, manifests[item.task][0], item.payload, prefix.format(index))
            batch = self.new_runs(c, env_id, items, now)
            debounces = Debounces(batch, items)  # an idempotency key that matched wins over a debounce key
            handles = []
            for item in items:
                cached = batch.cached(item)
                if cached:
                    handles.append(RunHandle(id=cached, task=item.task, is_cached=True))
                elif item.options.debounce is not None:
                    handles.append(debounces.place(item, *manifests[item.task], replayed_from=replayed_from))
                else:
                    run_id = batch.add(item, *manifests[item.task], replayed_from=replayed_from)
                    handles.append(RunHandle(id=run_id, task=item.task))
            batch.write()
            debounces.flush()
        return handles

    def manifests(self, c: sa.Connection, env_id: str, items: Sequence[BatchItem]) -> Manifests:
        """The manifests of the tasks `items` name: registered ones, and those of the versions they are locked to."""
        task_ids = {item.task for item in items}
        rows = c.execute(self.context.scope(env_id).select(tasks.c.id, tasks.c.version, tasks.c.manifest)
                         .where(tasks.c.id.in_(task_ids))).all()
        found = {row.id: (TaskManifest.model_validate(row.manifest), row.version) for row in rows}
        if self.version_manifests is not None:
            for version in {item.options.version for item in items if item.options.version}:
                found.update(self.version_manifests(c, env_id, version))
        return found

    def validate(self, env_id: str, manifest: TaskManifest, payload: Any, prefix: str = "") -> None:
        """Raise InvalidPayload unless `payload` matches the task's payload schema (when it has one)."""
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

    def new_runs(self, c: sa.Connection, env_id: str, items: Sequence[BatchItem], now: float) -> NewRuns:
        """A batch of new runs of `env_id` to insert on `c`, knowing which of `items` already have a run."""
        return NewRuns(self.context, c, env_id, items, now)


class NewRuns:
    """New runs (with their tags, timeline events and ready entries) written in one go on one transaction.

    An item whose idempotency key already has a run, in the store or earlier in this batch, is
    `cached`: its caller returns that run instead of adding a new one.
    """

    def __init__(self, context: EngineContext, c: sa.Connection, env_id: str, items: Sequence[BatchItem],
                 now: float) -> None:
        self.context, self.c, self.env_id, self.now = context, c, env_id, now
        self.scope = context.scope(env_id)
        self.rows: list[dict[str, Any]] = []
        self._tags: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        self._keyed = self._existing(items)

    def _existing(self, items: Sequence[BatchItem]) -> dict[tuple[str, str], str]:
        """(task, idempotency key) -> run, for the keys of `items` that live runs hold; expired keys are freed."""
        wanted = {(item.task, item.options.idempotency_key) for item in items if item.options.idempotency_key}
        if not wanted:
            return {}
        rows = self.c.execute(self.scope.select(runs.c.id, runs.c.task_id, runs.c.idempotency_key,
                                                runs.c.idempotency_expires_at).where(
            runs.c.task_id.in_({task for task, _ in wanted}),
            runs.c.idempotency_key.in_({key for _, key in wanted}))).all()
        found, expired = {}, []
        for row in rows:
            if (row.task_id, row.idempotency_key) not in wanted:
                continue
            if row.idempotency_expires_at is None or row.idempotency_expires_at > self.now:
                found[(row.task_id, row.idempotency_key)] = row.id
            else:
                expired.append(row.id)
        if expired:
            self.c.execute(self.scope.update(runs).where(runs.c.id.in_(expired)).values(idempotency_key=None))
        return found

    def cached(self, item: BatchItem) -> str | None:
        """The run that `item`'s idempotency key already has, if any."""
        key = item.options.idempotency_key
        return self._keyed.get((item.task, key)) if key else None

    def add(self, item: BatchItem, manifest: TaskManifest, version: str, *, replayed_from: str | None = None,
            event_data: dict[str, Any] | None = None) -> str:
        """Add a run of a known task with a valid payload; returns its id."""
        row = new_run_row(self.env_id, item, manifest, version, self.now, replayed_from)
        if item.options.idempotency_key:
            self._keyed[(item.task, item.options.idempotency_key)] = row["id"]
        self.rows.append(row)
        self._tags.extend({"run_id": row["id"], "tag": tag, "env_id": self.env_id} for tag in item.options.tags)
        self._events.append(timeline_event(row["id"], self.now, "status", row["status"], data=event_data,
                                           message="queued" if row["status"] == S.QUEUED else "delayed"))
        if item.options.queue:
            queue.declare_queue(self.c, self.env_id, row["queue"], item.options.queue)
        return row["id"]

    def write(self) -> None:
        """Insert what was added; queued runs go on the ready queue."""
        if self.rows:
            insert_rows(self.c, runs, self.rows)
            insert_rows(self.c, run_events, self._events)
            self.context.statistics.inserted("runs", len(self.rows))
        insert_rows(self.c, run_tags, self._tags)
        ready = [ready_run(row, self.now) for row in self.rows if row["status"] == S.QUEUED]
        self.context.enqueue(self.c, ready)
        if ready:
            self.context.notify_in(self.c)


def new_run_row(env_id: str, item: BatchItem, manifest: TaskManifest, version: str, now: float,
                replayed_from: str | None) -> dict[str, Any]:
    """The `runs` row of a new run: the trigger's options over the task's defaults."""
    options = item.options
    delay_until = to_timestamp(options.delay, now)
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
