"""Cron schedules: storing them, following the declared ones, and firing each tick exactly once.

When a schedule fires is `cron`'s business. Firing is one transaction per batch of due schedules:
read them (on PostgreSQL locked with SKIP LOCKED, so replicas split them), insert one run per
(schedule, tick), and move `next_run_at` on with a compare-and-set. The run's idempotency key
`schedule:<id>:<tick>` is a unique key of the store, so no tick can have two runs, whatever the
replicas do. `next_run_at` is indexed and NULL while a schedule is inactive: a loop reads only
what is due.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from outlast._schedules import schedule_tag
from outlast.wire import (
    BatchItem,
    CatchUp,
    Schedule,
    ScheduleCreate,
    ScheduleList,
    ScheduleType,
    ScheduleUpdate,
    TaskManifest,
    TriggerOptions,
)

from ..errors import Conflict, EngineError, UnknownTask
from ..store import queue
from ..store.ids import new_run_id
from ..store.schema import schedules, tasks
from .context import utc
from .cron import InvalidSchedule, check, iso, latest_tick, next_tick, ticks_after, upcoming
from .facade import RunEngine
from .scope import EnvScope

log = logging.getLogger("outlast.runtime.scheduler")

# A tick no older than this is on time even for `catch_up="skip"` (the loop is late, not the runtime down).
SKIP_GRACE = 60.0
BATCH = 500


class ScheduleNotFound(EngineError):
    status_code = 404
    code = "schedule_not_found"


# --- the scheduler ----------------------------------------------------------------------------


class Scheduler:
    def __init__(self, engine: RunEngine, *, batch: int = BATCH,
                 on_fired: Callable[[Sequence[float]], None] | None = None) -> None:
        """`on_fired(ticks)` is called after each batch commits, with the ticks of the runs it created
        (bench/schedules.py measures firing lag with it). Declarative schedules follow registrations
        through `sync_declarative`, a hook of the engine's."""
        self.engine = engine
        self.db = engine.db
        self.clock = engine.clock
        self.batch = batch
        self.on_fired = on_fired

    # --- reading ------------------------------------------------------------------------------

    def _row(self, c: sa.Connection, scope: EnvScope, schedule_id: str) -> sa.Row:
        row = c.execute(scope.select(schedules).where(schedules.c.id == schedule_id)).first()
        if row is None:
            raise ScheduleNotFound(f"schedule {schedule_id!r} not found", field="schedule_id")
        return row

    def to_schedule(self, row: Any, now: float | None = None) -> Schedule:
        now = self.clock() if now is None else now
        ticks = ticks_after(row.cron, row.timezone, now) if row.active else ()
        return Schedule(
            id=row.id, type=ScheduleType(row.type), task=row.task_id, cron=row.cron, timezone=row.timezone,
            external_id=row.external_id,
            deduplication_key=row.deduplication_key if row.type == ScheduleType.IMPERATIVE else None,
            catch_up=CatchUp(row.catch_up), active=row.active, next_run=utc(row.next_run_at),
            last_timestamp=utc(row.last_tick_at), upcoming=[utc(t) for t in ticks],
            created_at=utc(row.created_at), updated_at=utc(row.updated_at),
        )

    def retrieve(self, env_id: str, schedule_id: str) -> Schedule:
        scope = self.engine.context.scope(env_id)
        with scope.connect() as c:
            return self.to_schedule(self._row(c, scope, schedule_id))

    def list(self, env_id: str, *, task: str | None = None, external_id: str | None = None,
             type: ScheduleType | None = None, active: bool | None = None, limit: int = 50,
             cursor: str | None = None) -> ScheduleList:
        scope = self.engine.context.scope(env_id)
        stmt = scope.select(schedules).order_by(schedules.c.id.desc())
        if task is not None:
            stmt = stmt.where(schedules.c.task_id == task)
        if external_id is not None:
            stmt = stmt.where(schedules.c.external_id == external_id)
        if type is not None:
            stmt = stmt.where(schedules.c.type == type.value)
        if active is not None:
            stmt = stmt.where(schedules.c.active == active)
        if cursor:
            stmt = stmt.where(schedules.c.id < cursor)
        with scope.connect() as c:
            rows = c.execute(stmt.limit(limit + 1)).all()
        now = self.clock()
        page = [self.to_schedule(row, now) for row in rows[:limit]]
        return ScheduleList(data=page, next_cursor=page[-1].id if len(rows) > limit else None)

    # --- writing ------------------------------------------------------------------------------

    def _require_task(self, c: sa.Connection, scope: EnvScope, task_id: str) -> None:
        found = c.execute(scope.select(tasks.c.id).where(tasks.c.id == task_id)).first()
        if found is None:
            raise UnknownTask(f"task {task_id!r} is not registered in environment {scope.env_id!r}", field="task")

    def create(self, env_id: str, body: ScheduleCreate) -> Schedule:
        """Create, or with a deduplication key already in use, update that schedule (its active flag stays)."""
        try:
            return self._create(env_id, body)
        except sa.exc.IntegrityError:
            return self._create(env_id, body)  # a concurrent create with the same key won: update it

    def _create(self, env_id: str, body: ScheduleCreate) -> Schedule:
        now = self.clock()
        first = check(body.cron, body.timezone, now)
        scope = self.engine.context.scope(env_id)
        with scope.begin() as c:
            self._require_task(c, scope, body.task)
            existing = None
            if body.deduplication_key:
                existing = c.execute(scope.select(schedules).where(
                    schedules.c.type == ScheduleType.IMPERATIVE.value,
                    schedules.c.deduplication_key == body.deduplication_key).with_for_update()).first()
            if existing is not None:
                changes = body.model_dump(include={"task", "cron", "timezone", "external_id", "catch_up"})
                row = self._apply(c, scope, existing, ScheduleUpdate(**changes), now)
                return self.to_schedule(row, now)
            values = {"id": new_run_id(now).replace("run_", "sched_", 1), "env_id": env_id,
                      "type": ScheduleType.IMPERATIVE.value, "task_id": body.task, "cron": body.cron,
                      "timezone": body.timezone, "external_id": body.external_id,
                      "deduplication_key": body.deduplication_key, "catch_up": body.catch_up.value,
                      "active": body.active, "next_run_at": first if body.active else None,
                      "last_tick_at": None, "created_at": now, "updated_at": now}
            c.execute(schedules.insert().values(**values))
            return self.to_schedule(self._row(c, scope, values["id"]), now)

    def _apply(self, c: sa.Connection, scope: EnvScope, row: sa.Row, body: ScheduleUpdate, now: float) -> sa.Row:
        values: dict[str, Any] = {"updated_at": now}
        if body.task is not None and body.task != row.task_id:
            self._require_task(c, scope, body.task)
            values["task_id"] = body.task
        if body.external_id is not None:
            values["external_id"] = body.external_id
        if body.catch_up is not None:
            values["catch_up"] = body.catch_up.value
        cron = body.cron if body.cron is not None else row.cron
        timezone = body.timezone if body.timezone is not None else row.timezone
        if (cron, timezone) != (row.cron, row.timezone):
            first = check(cron, timezone, now)
            values.update(cron=cron, timezone=timezone, next_run_at=first if row.active else None)
        c.execute(scope.update(schedules).where(schedules.c.id == row.id).values(**values))
        return self._row(c, scope, row.id)

    def update(self, env_id: str, schedule_id: str, body: ScheduleUpdate) -> Schedule:
        now = self.clock()
        scope = self.engine.context.scope(env_id)
        with scope.begin() as c:
            row = self._row(c, scope, schedule_id)
            self._imperative(row, "updated")
            return self.to_schedule(self._apply(c, scope, row, body, now), now)

    def set_active(self, env_id: str, schedule_id: str, active: bool) -> Schedule:
        """(De)activate; an activated schedule resumes at its next tick, without catching up."""
        now = self.clock()
        scope = self.engine.context.scope(env_id)
        with scope.begin() as c:
            row = self._row(c, scope, schedule_id)
            if row.active != active:
                next_at = next_tick(row.cron, row.timezone, now) if active else None
                c.execute(scope.update(schedules).where(schedules.c.id == row.id).values(
                    active=active, next_run_at=next_at, updated_at=now))
                row = self._row(c, scope, schedule_id)
            return self.to_schedule(row, now)

    def delete(self, env_id: str, schedule_id: str) -> Schedule:
        now = self.clock()
        scope = self.engine.context.scope(env_id)
        with scope.begin() as c:
            row = self._row(c, scope, schedule_id)
            self._imperative(row, "deleted")
            c.execute(scope.delete(schedules).where(schedules.c.id == row.id))
            return self.to_schedule(row, now).model_copy(update={"active": False, "next_run": None, "upcoming": []})

    @staticmethod
    def _imperative(row: sa.Row, verb: str) -> None:
        if row.type == ScheduleType.DECLARATIVE.value:
            raise Conflict(f"schedule {row.id} is declared in the code of task {row.task_id!r}; it can only be "
                           f"{verb} there (activate/deactivate work)", field="schedule_id")

    # --- firing -------------------------------------------------------------------------------

    def tick(self) -> int:
        """Fire every due tick; returns how many runs were created."""
        now = self.clock()
        with self.db.connect() as c:  # most loops find nothing due: one index probe, no write
            if c.execute(_ANY_DUE, {"now": now}).first() is None:
                return 0
        fired = 0
        while True:
            count, full = self._fire_batch(now)
            fired += count
            if not full:
                break
        if fired:
            self.engine.wake()
        return fired

    def seconds_until_due(self) -> float | None:
        with self.db.connect() as c:
            first = c.execute(sa.select(sa.func.min(schedules.c.next_run_at))).scalar()
        return None if first is None else max(0.0, first - self.clock())

    def _fire_batch(self, now: float) -> tuple[int, bool]:
        """One transaction: lock due schedules, create their runs, move them on. All of it or none."""
        due = sa.select(schedules).where(schedules.c.next_run_at <= now).order_by(schedules.c.next_run_at) \
            .limit(self.batch)
        if not self.db.is_sqlite:
            due = due.with_for_update(skip_locked=True)  # replicas split the due schedules between them
        with self.db.begin() as c:
            rows = c.execute(due).all()
            if not rows:
                return 0, False
            plans = [(row, *self._plan(row, now)) for row in rows]
            # Runs are created "now" for this batch: in a burst, later batches are later than the loop's start.
            fired, created = self._create_runs(c, [(row, tick) for row, tick, _ in plans if tick is not None],
                                               self.clock())
            c.execute(_ADVANCE, [{"b_id": row.id, "b_old": row.next_run_at, "b_next": next_at,
                                  "b_last": tick if row.id in fired else row.last_tick_at}
                                 for row, tick, next_at in plans])
        if self.on_fired is not None:
            self.on_fired(created)
        return len(fired), len(rows) == self.batch

    @staticmethod
    def _plan(row: sa.Row, now: float) -> tuple[float | None, float]:
        """The tick to fire now (None: skip) and the next one after it."""
        following = next_tick(row.cron, row.timezone, row.next_run_at)  # cached: schedules share expressions
        if following > now:  # on time, the usual case
            latest = row.next_run_at
        else:  # the runtime was down (or the loop very late) across several ticks: the last of them
            latest = latest_tick(row.cron, row.timezone, now)
            following = next_tick(row.cron, row.timezone, latest)
        if row.catch_up == CatchUp.SKIP.value and now - latest > SKIP_GRACE:
            return None, following
        return latest, following

    def _create_runs(self, c: sa.Connection, due: Sequence[tuple[sa.Row, float]],
                     now: float) -> tuple[set[str], list[float]]:
        """Insert one queued run per (schedule, tick) on `c`: the ids of the schedules that fired, and the
        ticks of the runs created.

        This is the engine's insert path of new runs, inside the scheduler's transaction, so a run
        exists exactly when its schedule has moved past the tick. The idempotency key
        `schedule:<id>:<tick>` is the store's unique key on (schedule, tick): a tick that already has its
        run gets no second one. A tick whose task is gone or refuses the payload is skipped, with a warning.
        """
        triggering = self.engine.triggering
        by_env: dict[str, list[tuple[sa.Row, float, BatchItem]]] = defaultdict(list)
        for row, tick in due:
            by_env[row.env_id].append((row, tick, self._item(row, tick)))
        fired: set[str] = set()
        created: list[float] = []
        for env_id, entries in by_env.items():
            items = [item for _, _, item in entries]
            manifests = triggering.manifests(c, env_id, items)
            batch = triggering.new_runs(c, env_id, items, now)
            for row, tick, item in entries:
                if batch.cached(item):
                    fired.add(row.id)  # this tick has its run already (another replica was first)
                    continue
                if item.task not in manifests:
                    log.warning("schedule %s skipped a tick: task %r is not registered in %s", row.id, item.task,
                                env_id)
                    continue
                manifest, version = manifests[item.task]
                try:
                    triggering.validate(env_id, manifest, item.payload)
                except EngineError as exc:
                    log.warning("schedule %s skipped a tick of task %s: %s", row.id, item.task, exc.message)
                    continue
                batch.add(item, manifest, version, event_data={"schedule_tick": item.payload["timestamp"]})
                fired.add(row.id)
                created.append(tick)
            batch.write()
        return fired, created

    @staticmethod
    def _item(row: sa.Row, tick: float) -> BatchItem:
        payload = {
            "type": row.type, "timestamp": iso(tick), "last_timestamp": iso(row.last_tick_at),
            "timezone": row.timezone, "schedule_id": row.id, "external_id": row.external_id,
            "upcoming": list(upcoming(row.cron, row.timezone, tick)),
        }
        # Copies of a template, not validation: the values are ours, and a burst has thousands of them.
        options = _OPTIONS.model_copy(update={"idempotency_key": f"schedule:{row.id}:{tick:.0f}",
                                              "tags": [schedule_tag(row.id)]})
        return _ITEM.model_copy(update={"task": row.task_id, "payload": payload, "options": options})

    # --- the loop -----------------------------------------------------------------------------

    async def run(self, max_sleep: float = 1.0) -> None:
        """Fire due ticks, then sleep until the next one (at most `max_sleep`, to see other replicas' changes)."""
        while True:
            wait = max_sleep
            try:
                await asyncio.to_thread(self.tick)
                until = await asyncio.to_thread(self.seconds_until_due)
                if until is not None:
                    wait = min(max_sleep, until)
            except Exception:
                log.exception("scheduler tick failed")
            # A floor: due rows that another replica has locked (and is firing) must not make this one spin.
            await asyncio.sleep(max(wait, 0.02))


# --- declarative schedules ----------------------------------------------------------------------


def sync_declarative(c: sa.Connection, env_ids: Sequence[str], version: str, manifests: Sequence[TaskManifest],
                     now: float) -> None:
    """A registration hook of the engine: in the transaction that registers a version's tasks, the
    environments' declarative schedules become the ones that version declares."""
    declared = {}
    for manifest in manifests:
        if manifest.schedule is None:
            continue
        try:
            first = check(manifest.schedule.cron, manifest.schedule.timezone, now)
        except InvalidSchedule as exc:
            log.error("task %s of version %s: schedule ignored: %s", manifest.id, version, exc.message)
            continue
        declared[manifest.id] = (manifest.schedule, first)
    kind = ScheduleType.DECLARATIVE.value
    for env_id in env_ids:
        existing = {row.task_id: row for row in c.execute(sa.select(schedules).where(
            schedules.c.env_id == env_id, schedules.c.type == kind))}
        gone = [row.id for task_id, row in existing.items() if task_id not in declared]
        if gone:
            c.execute(schedules.delete().where(schedules.c.id.in_(gone)))
        for task_id, (spec, first) in declared.items():
            row = existing.get(task_id)
            if row is None:
                stmt = queue.upsert(c, schedules).values(
                    id=new_run_id(now).replace("run_", "sched_", 1), env_id=env_id, type=kind, task_id=task_id,
                    cron=spec.cron, timezone=spec.timezone, external_id=None, deduplication_key=task_id,
                    catch_up=spec.catch_up.value, active=True, next_run_at=first, last_tick_at=None,
                    created_at=now, updated_at=now)
                c.execute(stmt.on_conflict_do_nothing(index_elements=["env_id", "type", "deduplication_key"]))
            elif (row.cron, row.timezone, row.catch_up) != (spec.cron, spec.timezone, spec.catch_up.value):
                c.execute(schedules.update().where(schedules.c.id == row.id).values(
                    cron=spec.cron, timezone=spec.timezone, catch_up=spec.catch_up.value, updated_at=now,
                    next_run_at=first if row.active else None))


_OPTIONS = TriggerOptions()
_ITEM = BatchItem(task="-")
_ANY_DUE = sa.select(schedules.c.id).where(schedules.c.next_run_at <= sa.bindparam("now")).limit(1)
# Compare-and-set: a replica that fired the same tick first has already moved next_run_at on.
_ADVANCE = schedules.update().where(schedules.c.id == sa.bindparam("b_id"),
                                    schedules.c.next_run_at == sa.bindparam("b_old")).values(
    next_run_at=sa.bindparam("b_next"), last_tick_at=sa.bindparam("b_last"))
