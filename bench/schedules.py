"""Scheduler benchmark: 10,000 active schedules in one environment, fired by the runtime's own loop.

    .venv/bin/python bench/schedules.py [--store sqlite|postgres|both] [--schedules 10000] [--seconds 60] [--smoke]

Two workloads per store, each run by `Scheduler.run` (the loop the runtime runs) against a real
store, with nothing claiming the runs it creates:

- spread: every schedule fires once a minute, at its own second (`* * * * * S`), about 167 ticks a
  second in all; measured for `--seconds` of wall time;
- burst: every schedule fires at the top of the minute (`* * * * *`): 10,000 runs due at once.

Printed per workload: loop time per tick (only loops that fired), runs fired per loop, and firing
lag (a run's `created_at` minus the tick it is for). "idle loop" is a loop with nothing due.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import sqlalchemy as sa

from outlast.runtime.access.environments import Environments
from outlast.runtime.engine import RunEngine
from outlast.runtime.engine.cron import next_tick
from outlast.runtime.engine.schedules import Scheduler
from outlast.runtime.store.db import Database
from outlast.runtime.store.ids import new_run_id
from outlast.runtime.store.schema import runs, schedules
from outlast.wire import TaskManifest

PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def store(kind: str) -> Iterator[Database]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            db = Database(f"sqlite:///{Path(directory) / 'bench.db'}")
            yield db
            db.dispose()
        return
    import psycopg

    name = f"outlast_bench_sched_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = Database(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
    try:
        yield db
    finally:
        db.dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def populate(db: Database, crons: list[str]) -> None:
    """Insert the schedules directly (the API's create is measured elsewhere): 10,000 rows in one go."""
    now = time.time()
    start = now + 3  # the first ticks come after the rows are in and the loop runs
    rows = [{"id": new_run_id(now).replace("run_", "sched_", 1), "env_id": "dev", "type": "IMPERATIVE",
             "task_id": "noop", "cron": cron, "timezone": "UTC", "external_id": f"tenant_{i}",
             "deduplication_key": None, "catch_up": "last", "active": True,
             "next_run_at": next_tick(cron, "UTC", start),
             "last_tick_at": None, "created_at": now, "updated_at": now} for i, cron in enumerate(crons)]
    with db.begin() as c:
        c.execute(schedules.delete())
        c.execute(runs.delete())
        c.execute(schedules.insert(), rows)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Lags:
    """Firing lag of every run: the wall time at which the transaction that created it had committed,
    minus its tick (the scheduler's `on_fired` reports each committed batch's ticks)."""

    def __init__(self) -> None:
        self.lags: list[float] = []

    def fired(self, ticks: Sequence[float]) -> None:
        committed = time.time()
        self.lags.extend(committed - t for t in ticks)


async def drive(scheduler: Scheduler, lags: Lags, seconds: float) -> tuple[list[tuple[float, int]], list[float]]:
    """Run the runtime's scheduler loop for `seconds`.

    Returns (loop seconds, runs fired) of every loop, and the lag of every run fired meanwhile.
    """
    loops: list[tuple[float, int]] = []
    lags.lags = []
    tick = scheduler.tick

    def timed_tick() -> int:
        started = time.perf_counter()
        fired = tick()
        loops.append((time.perf_counter() - started, fired))
        return fired

    scheduler.tick = timed_tick  # the loop calls the instance's tick: time each one
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(scheduler.run(), seconds)
    finally:
        del scheduler.tick
    return loops, lags.lags


def count_runs(db: Database) -> int:
    with db.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(runs)).scalar()


def idle_loop_ms(scheduler: Scheduler, rounds: int = 200) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        scheduler.tick()
    return (time.perf_counter() - started) / rounds * 1000


def measure(kind: str, count: int, seconds: float) -> list[dict]:
    results = []
    with store(kind) as db:
        db.migrate()
        Environments(db).bootstrap("ol_dev_bench_schedules_0123")
        engine = RunEngine(db)
        lags = Lags()
        scheduler = Scheduler(engine, on_fired=lags.fired)
        engine.register_tasks(["dev"], "v1", [TaskManifest(id="noop")])
        for workload, crons, duration in (
            ("spread", [f"* * * * * {i % 60}" for i in range(count)], seconds),
            ("burst", ["* * * * *"] * count, None),
        ):
            idle = None
            if duration is None and next_tick("* * * * *", "UTC", time.time()) - time.time() < 15:
                time.sleep(16)  # populate and the idle loops must be done before the minute turns
            populate(db, crons)
            if not db.is_sqlite:
                with db.begin() as c:
                    c.execute(sa.text("ANALYZE schedules"))  # as autovacuum would have, on a table this size
            if duration is None:  # run from just before the next minute until its ticks have all fired
                first = next_tick("* * * * *", "UTC", time.time())
                idle = idle_loop_ms(scheduler)  # nothing is due yet: the cost of a loop that finds nothing
                time.sleep(max(0.0, first - time.time() - 1))
                duration = 1 + 30
            loops, lag = asyncio.run(drive(scheduler, lags, duration))
            busy = [(s, n) for s, n in loops if n]
            assert count_runs(db) == len(lag), "every run created was measured"
            results.append({
                "store": kind, "workload": workload, "schedules": count, "runs": len(lag),
                "loop_ms": [s * 1000 for s, _ in busy], "per_loop": statistics.mean(n for _, n in busy) if busy else 0,
                "lag_ms": [x * 1000 for x in lag], "idle_ms": idle,
            })
            print(f"  {kind} {workload}: {len(lag)} runs, {len(busy)} loops that fired", file=sys.stderr)
    return results


def table(results: list[dict]) -> str:
    head = ("| store | workload | schedules | runs fired | runs per loop | loop time p50 / p99 / max (ms) "
            "| lag p50 / p99 / max (ms) | idle loop (ms) |")
    lines = [head, "|" + "---|" * 8]
    for r in results:
        loop, lag = r["loop_ms"], r["lag_ms"]
        idle = f"{r['idle_ms']:.2f}" if r["idle_ms"] is not None else "-"
        lines.append(
            f"| {r['store']} | {r['workload']} | {r['schedules']:,} | {r['runs']:,} | {r['per_loop']:.0f} "
            f"| {percentile(loop, 50):.1f} / {percentile(loop, 99):.1f} / {max(loop):.1f} "
            f"| {percentile(lag, 50):.0f} / {percentile(lag, 99):.0f} / {max(lag):.0f} | {idle} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="wall time of the spread workload")
    parser.add_argument("--smoke", action="store_true",
                        help="120 schedules (two a second) for 5 s: checks that both workloads work")
    args = parser.parse_args()
    if args.smoke:
        args.schedules, args.seconds = 120, 5.0
    kinds = ("sqlite", "postgres") if args.store == "both" else (args.store,)
    results = [r for kind in kinds for r in measure(kind, args.schedules, args.seconds)]
    print(table(results))


if __name__ == "__main__":
    main()
