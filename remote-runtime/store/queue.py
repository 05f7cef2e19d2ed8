"""The ready queue: enqueue with fairness sequence numbers, claim under concurrency limits.

A run is in `run_queue` only while it is ready (or waiting out a retry backoff). Claiming
deletes its row, so the dequeue query reads only live rows however much history there is.

Fairness: each (queue, concurrency key) hands out increasing sequence numbers, starting no
lower than the smallest number still queued in the environment. Ordering by sequence then
takes one run of each key per "round", so a burst of 10,000 runs from one tenant does not
starve another tenant's single run.
"""

from __future__ import annotations

import functools
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from outlast.wire import QueueOptions

from . import rate_limits
from .multirow import insert_rows
from .schema import queue_keys, queues, run_queue

KeyTuple = tuple[str, str, str]  # env_id, queue, concurrency key ("" for none)


@dataclass(frozen=True)
class ReadyRun:
    run_id: str
    env_id: str
    task_id: str
    queue: str
    concurrency_key: str | None
    priority: int
    available_at: float
    resume: bool = False  # a checkpointed run going back to its worker: same attempt
    version: str | None = None  # a deployed version (see routed_version); only its workers claim the run

    @property
    def key(self) -> KeyTuple:
        return (self.env_id, self.queue, self.concurrency_key or "")


def upsert(connection: sa.Connection, table: sa.Table):  # a dialect's insert, for on_conflict_*
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def declare_queue(connection: sa.Connection, env_id: str, name: str, options: QueueOptions | None) -> None:
    """Make sure queue `name` exists; the limits `options` (a task's or a trigger's) give replace the stored ones.
    A limit they leave out stays as it was."""
    values: dict[str, object] = {}
    if options is not None and options.concurrency_limit is not None:
        values["concurrency_limit"] = options.concurrency_limit
    if options is not None and options.rate_limit is not None:
        rate = options.rate_limit
        values.update(rate_limit=rate.limit, rate_period=rate.period, rate_burst=rate.burst)
    stmt = upsert(connection, queues).values(env_id=env_id, name=name, **values)
    connection.execute(stmt.on_conflict_do_update(index_elements=["env_id", "name"], set_=values) if values
                       else stmt.on_conflict_do_nothing(index_elements=["env_id", "name"]))


class SequenceFloors:
    """Per environment, the lowest sequence number still queued, as this process last saw it.

    Reading it on every enqueue costs an index scan over the dead entries that claims leave
    behind (until vacuum); an estimate re-read once a second and raised by every claim serves
    fairness as well. It never goes down, as sequence numbers only grow.
    """

    def __init__(self, refresh_seconds: float = 1.0) -> None:
        self.refresh_seconds = refresh_seconds
        self._values: dict[str, tuple[int, float]] = {}

    def get(self, connection: sa.Connection, env_id: str) -> int:
        value, read_at = self._values.get(env_id, (0, -self.refresh_seconds))
        if time.monotonic() - read_at >= self.refresh_seconds:
            lowest = connection.execute(_LOWEST_SEQ, {"b_env": env_id}).scalar()
            value = max(value, lowest or 0)
            self._values[env_id] = (value, time.monotonic())
        return value

    def raise_to(self, env_id: str, seq: int) -> None:
        value, read_at = self._values.get(env_id, (0, -self.refresh_seconds))
        if seq > value:
            self._values[env_id] = (seq, read_at)


def enqueue(connection: sa.Connection, ready: Sequence[ReadyRun], floors: SequenceFloors | None = None) -> None:
    """Insert ready rows, reserving one sequence number per run from its key, in order."""
    if not ready:
        return
    floors = floors or SequenceFloors(refresh_seconds=0)
    lowest = {env_id: floors.get(connection, env_id) for env_id in {r.env_id for r in ready}}
    next_seq: dict[KeyTuple, int] = {}
    for key, count in Counter(r.key for r in ready).items():
        last = _reserve(connection, key, count, lowest[key[0]])
        next_seq[key] = last - count + 1
    rows = []
    for r in ready:
        rows.append({
            "run_id": r.run_id, "env_id": r.env_id, "task_id": r.task_id, "queue": r.queue,
            "concurrency_key": r.concurrency_key or "", "rank": -r.priority, "seq": next_seq[r.key],
            "available_at": r.available_at, "resume": r.resume, "version": r.version,
        })
        next_seq[r.key] += 1
    insert_rows(connection, run_queue, rows)


def _reserve(connection: sa.Connection, key: KeyTuple, count: int, floor: int) -> int:
    """Advance the key's last sequence number by `count` (from at least `floor`); return the new last."""
    env_id, name, concurrency_key = key
    params = {"b_env": env_id, "b_queue": name, "b_key": concurrency_key, "b_insert_last": floor + count,
              "b_floor_next": floor + 1, "b_count_less_one": count - 1}
    return connection.execute(_reserve_statement(connection.dialect.name), params).scalar_one()


@functools.cache
def _reserve_statement(dialect_name: str) -> sa.Executable:
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    next_seq = queue_keys.c.last_seq + 1
    start = sa.case((next_seq > sa.bindparam("b_floor_next"), next_seq), else_=sa.bindparam("b_floor_next"))
    return (
        dialect.insert(queue_keys)
        .values(env_id=sa.bindparam("b_env"), queue=sa.bindparam("b_queue"), concurrency_key=sa.bindparam("b_key"),
                last_seq=sa.bindparam("b_insert_last"), running=0)
        .on_conflict_do_update(index_elements=["env_id", "queue", "concurrency_key"],
                               set_={"last_seq": start + sa.bindparam("b_count_less_one")})
        .returning(queue_keys.c.last_seq)
    )


_joined = run_queue.outerjoin(
    queues, sa.and_(queues.c.env_id == run_queue.c.env_id, queues.c.name == run_queue.c.queue)
).outerjoin(
    queue_keys,
    sa.and_(queue_keys.c.env_id == run_queue.c.env_id, queue_keys.c.queue == run_queue.c.queue,
            queue_keys.c.concurrency_key == run_queue.c.concurrency_key),
)
# Ready rows of one environment, in dequeue order, skipping keys already at their limit. The count
# leaves headroom for rows of keys that fill up within the batch being claimed.
_CANDIDATES = (
    sa.select(run_queue, queues.c.concurrency_limit, queues.c.rate_limit, queues.c.rate_period, queues.c.rate_burst)
    .select_from(_joined)
    .where(
        run_queue.c.env_id == sa.bindparam("env"),
        run_queue.c.task_id.in_(sa.bindparam("tasks", expanding=True)),
        run_queue.c.available_at <= sa.bindparam("now"),
        sa.or_(queues.c.concurrency_limit.is_(None),
               sa.func.coalesce(queue_keys.c.running, 0) < queues.c.concurrency_limit),
    )
    .order_by(run_queue.c.rank, run_queue.c.seq, run_queue.c.run_id)
    .limit(sa.bindparam("count"))
    .with_for_update(of=run_queue, skip_locked=True)
)
# Working-copy workers (`outlast dev`, `--project`) take unrouted runs; deployment workers the versions they run.
# The candidates' plan must walk ix_run_queue_order and stop after `count` rows. With statistics of an
# emptier table (a queue filled from empty, autovacuum off or behind) the planner expects a handful of
# rows and would rather scan and sort the whole backlog: 50,000 rows, 120 ms and a spill to disk per
# claim, and it reads the rows it deletes by a sequential scan. Within the claim's transaction only (every
# statement of which has an index to use), sorts and bitmap or sequential scans cost more than any index walk.
_PLAN_BY_INDEX = sa.text("SELECT set_config('enable_sort', 'off', true), set_config('enable_bitmapscan', 'off', true),"
                         " set_config('enable_seqscan', 'off', true)")
_CANDIDATES_WORKING = _CANDIDATES.where(run_queue.c.version.is_(None))
_CANDIDATES_DEPLOYED = _CANDIDATES.where(run_queue.c.version.in_(sa.bindparam("versions", expanding=True)))
_DEPLOYED_VERSION = re.compile(r"\d{8}\.\d+")


def routed_version(version: str | None) -> str | None:
    """The version a run's queue row is routed to: deployed versions (YYYYMMDD.N) only. A working copy's
    `dev-<hash>` is not routed, since its worker reloads and runs whatever the working copy is now."""
    return version if version and _DEPLOYED_VERSION.fullmatch(version) else None


def claim(
    connection: sa.Connection, *, env_ids: Iterable[str], task_ids: Iterable[str], limit: int, now: float,
    floors: SequenceFloors | None = None, versions: Sequence[str] | None = None, take: bool = True,
) -> list[sa.Row]:
    """Take up to `limit` ready rows the caller may run now; their counters are incremented.

    `versions` None: runs not routed to a deployed version; else only runs of those versions.
    `take` False: only choose (and lock) the rows; the caller deletes them and counts their `slots`."""
    env_ids, task_ids = list(env_ids), list(task_ids)
    if not env_ids or not task_ids or versions == []:
        return []
    statement = _CANDIDATES_WORKING if versions is None else _CANDIDATES_DEPLOYED
    extra = {} if versions is None else {"versions": list(versions)}
    candidates: list[sa.Row] = []
    if connection.dialect.name == "postgresql":
        connection.execute(_PLAN_BY_INDEX)
    for env_id in env_ids:  # one environment per query, so the index yields rows already in order
        candidates += connection.execute(statement, {"env": env_id, "tasks": task_ids, "now": now,
                                                     "count": limit * 4 + 8, **extra}).all()
    candidates.sort(key=lambda r: (r.rank, r.seq, r.run_id))
    if not candidates:
        return []
    limits = {_key(r): r.concurrency_limit for r in candidates if r.concurrency_limit is not None}
    rates = {_key(r): rate for r in candidates if (rate := rate_limits.rate_of(r)) is not None}
    locked = rate_limits.lock_keys(connection, list(set(limits) | set(rates)))
    running = {key: locked[key].running if locked[key] else 0 for key in limits}
    key_rates = {key: rate_limits.KeyRate(rate, locked[key].rate_tat if locked[key] else None)
                 for key, rate in rates.items()}
    chosen = []
    for row in candidates:
        key = _key(row)
        if key in limits and running[key] >= limits[key]:
            continue
        if key in key_rates and not key_rates[key].take(now):
            key_rates[key].waiting.append(row)  # not before its turn at the queue's rate
            continue
        if key in limits:
            running[key] += 1
        chosen.append(row)
        if len(chosen) == limit:
            break
    if key_rates:
        rate_limits.write(connection, key_rates, now)
    if floors is not None:
        for row in chosen:
            floors.raise_to(row.env_id, row.seq)
    if chosen and take:
        connection.execute(_DELETE_READY, {"ids": [r.run_id for r in chosen]})
        _add_running(connection, slots(chosen))
    return chosen


def slots(rows: Iterable[sa.Row]) -> Counter[KeyTuple]:
    """How many concurrency slots of each key the claimed `rows` take."""
    return Counter(_key(r) for r in rows)


def hold(connection: sa.Connection, keys: Iterable[KeyTuple]) -> None:
    """A run of each key executes again (a parked wait resumed in memory): take a concurrency slot."""
    _add_running(connection, Counter(keys))


def release(connection: sa.Connection, keys: Iterable[KeyTuple]) -> None:
    """An executing run of each key stopped: give its concurrency slot back."""
    _add_running(connection, Counter(keys), sign=-1)


def remove(connection: sa.Connection, run_ids: Sequence[str], *, env_id: str | None = None) -> set[str]:
    """Delete ready rows (cancel, expiry); returns the ids that were still queued. `env_id` limits it to one
    environment's rows (a caller's cancel, on its scope's connection); the expiry timer spans them all."""
    if not run_ids:
        return set()
    mine = [run_queue.c.env_id == env_id] if env_id is not None else []
    result = connection.execute(
        run_queue.delete().where(run_queue.c.run_id.in_(run_ids), *mine).returning(run_queue.c.run_id)
    )
    return {row.run_id for row in result}


def _key(row: sa.Row) -> KeyTuple:
    return (row.env_id, row.queue, row.concurrency_key)


def _add_running(connection: sa.Connection, counts: Counter[KeyTuple], sign: int = 1) -> None:
    if counts:
        connection.execute(_ADD_RUNNING, [{"b_env": env_id, "b_queue": name, "b_key": key, "b_delta": sign * count}
                                          for (env_id, name, key), count in counts.items()])


_LOWEST_SEQ = sa.select(sa.func.min(run_queue.c.seq)).where(run_queue.c.env_id == sa.bindparam("b_env"))
# Statements built once: the hot paths then skip SQLAlchemy's per-call expression building.
_DELETE_READY = run_queue.delete().where(run_queue.c.run_id.in_(sa.bindparam("ids", expanding=True)))
_KEY_MATCHES = sa.and_(queue_keys.c.env_id == sa.bindparam("b_env"), queue_keys.c.queue == sa.bindparam("b_queue"),
                       queue_keys.c.concurrency_key == sa.bindparam("b_key"))
_ADD_RUNNING = queue_keys.update().where(_KEY_MATCHES).values(
    running=sa.case((queue_keys.c.running + sa.bindparam("b_delta") < 0, 0),
                    else_=queue_keys.c.running + sa.bindparam("b_delta")))


QUEUED_CAP = 10_000


def queue_states(connection: sa.Connection, env_id: str, name: str | None = None, *, now: float) -> list[dict]:
    """The environment's queues (or the one named): their limits, runs executing, ready and rate-limited."""
    where = [queues.c.env_id == env_id] + ([queues.c.name == name] if name is not None else [])
    rows = connection.execute(sa.select(queues).where(*where).order_by(queues.c.name)).all()
    states = []
    for row in rows:
        running = connection.execute(sa.select(sa.func.coalesce(sa.func.sum(queue_keys.c.running), 0)).where(
            queue_keys.c.env_id == env_id, queue_keys.c.queue == row.name)).scalar_one()
        ready = (sa.select(run_queue.c.available_at, run_queue.c.rate_delayed)
                 .where(run_queue.c.env_id == env_id, run_queue.c.queue == row.name).limit(QUEUED_CAP).subquery())
        held_back = sa.and_(ready.c.rate_delayed, ready.c.available_at > now)
        queued, held = connection.execute(
            sa.select(sa.func.count(), sa.func.count().filter(held_back)).select_from(ready)).one()
        rate = None if row.rate_limit is None else {"limit": row.rate_limit, "period": row.rate_period,
                                                    "burst": row.rate_burst or 1}
        states.append({"name": row.name, "concurrency_limit": row.concurrency_limit, "rate_limit": rate,
                       "running": int(running), "queued": int(queued), "rate_limited": int(held or 0)})
    return states
