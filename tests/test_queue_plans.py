"""The claim's query plan on real PostgreSQL: it walks the queue's index however stale the statistics are.

Plans are asserted on (their nodes), never timings: a scan and sort of the backlog is a plan shape.
"""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from outlast.runtime.access.environments import Environments
from outlast.runtime.engine import RunEngine
from outlast.runtime.store.db import Database
from outlast.wire import AttemptCompletion, AttemptOutcome, BatchItem, RunStatus, TaskManifest, WorkerReport

from .conftest import PG_ADMIN_URL, _create_pg_database, _drop_pg_database, wait_for


@pytest.fixture
def fresh_postgres():
    """A new PostgreSQL database, migrated, never analysed by hand."""
    name = _create_pg_database()
    db = Database(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
    db.migrate()
    Environments(db).bootstrap("ol_dev_engine_test_key_0123")
    yield db
    db.dispose()
    _drop_pg_database(name)


def claim_statements(engine: RunEngine, db: Database) -> list[tuple[str, object]]:
    """The SQL (and parameters) of one claim of ten runs, in order, as the engine sent them."""
    sent: list[tuple[str, object]] = []
    claimer = threading.get_ident()

    def record(_conn, _cursor, statement, parameters, _context, _executemany):
        if threading.get_ident() == claimer:  # not the runtime's own ANALYZE in its thread
            sent.append((statement, parameters))

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        assert len(engine.claim("node-a", ["dev"], ["work"], 10)) == 10
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
    return sent


def explain(db: Database, statements: list[tuple[str, object]], *, guard: bool = True) -> list[str]:
    """The plans of a claim's statements, planned as in the claim's transaction (or without its guard)."""
    plans = []
    with db.engine.begin() as c:
        for statement, parameters in statements:
            if "set_config" in statement:
                if guard:
                    c.exec_driver_sql(statement, parameters)
            else:
                plans.append("\n".join(r[0] for r in c.exec_driver_sql("EXPLAIN " + statement, parameters)))
        c.rollback()
    return plans


def candidates_plan(plans: list[str]) -> str:
    return next(plan for plan in plans if "LockRows" in plan)


def assert_walks_indexes(plans: list[str]) -> None:
    """No statement of the claim scans or sorts a table: each reads by an index."""
    assert plans
    for plan in plans:
        assert "Seq Scan" not in plan and "Bitmap" not in plan and "Sort" not in plan, plan


def fill(engine: RunEngine, runs: int) -> None:
    for _ in range(runs // 1000):
        engine.trigger("dev", [BatchItem(task="work")] * 1000)


def test_a_queue_filled_from_empty_to_50000_runs_is_claimed_through_its_index(fresh_postgres):
    db = fresh_postgres
    engine = RunEngine(db)
    engine.register_tasks(["dev"], "v1", [TaskManifest(id="work")])
    analyser = engine.context.statistics
    analyser.enabled = False  # first the claim alone, on statistics of the empty table
    fill(engine, 50_000)
    with db.connect() as c:
        assert c.execute(sa.text("SELECT reltuples FROM pg_class WHERE relname = 'run_queue'")).scalar() < 0
    statements = claim_statements(engine, db)
    guarded = explain(db, statements)
    assert "Index Scan using ix_run_queue_order on run_queue" in candidates_plan(guarded), guarded
    assert_walks_indexes(guarded)
    # What the guard protects against: the same query, planned without it, scans and sorts the backlog.
    assert "Sort" in candidates_plan(explain(db, statements, guard=False))

    # The runtime analyses the table itself once it grew by the factor: then even the bare query walks the index.
    analyser.enabled = True
    fill(engine, 1000)
    wait_for(lambda: analyser.analyses >= 1 and not analyser._running, timeout=60, message="ANALYZE run_queue")
    with db.connect() as c:
        assert c.execute(sa.text("SELECT reltuples FROM pg_class WHERE relname = 'run_queue'")).scalar() > 40_000
    planned = candidates_plan(explain(db, claim_statements(engine, db), guard=False))
    assert "Index Scan using ix_run_queue_order on run_queue" in planned and "Sort" not in planned, planned


def test_the_migrations_tune_autovacuum_of_the_hot_tables(fresh_postgres):
    with fresh_postgres.connect() as c:
        options = dict(c.execute(sa.text(
            "SELECT relname, reloptions FROM pg_class WHERE relname IN ('run_queue', 'queue_keys', 'runs')")).all())
    assert "autovacuum_analyze_threshold=2000" in options["run_queue"]
    assert "autovacuum_analyze_scale_factor=0" in options["run_queue"]
    assert "fillfactor=50" in options["queue_keys"]
    assert "autovacuum_analyze_scale_factor=0.02" in options["runs"]


def test_finished_runs_stay_out_of_the_claim_s_plans(fresh_postgres):
    """200,000 finished runs in the store: each statement of a claim reads runs by primary key only."""
    db = fresh_postgres
    engine = RunEngine(db)
    engine.register_tasks(["dev"], "v1", [TaskManifest(id="work")])
    with db.engine.begin() as c:
        c.exec_driver_sql(
            "INSERT INTO runs (id, env_id, task_id, status, attempts, max_attempts, retry, tags, metadata, queue,"
            " priority, execution_ms, created_at, updated_at, completed_at)"
            " SELECT 'run_h' || lpad(g::text, 12, '0'), 'dev', 'work', 'COMPLETED', 1, 3, '{}', '[]', '{}',"
            " 'task/work', 0, 1, 1e9, 1e9, 1e9 FROM generate_series(1, 200000) g")
        c.exec_driver_sql("ANALYZE runs")
    fill(engine, 1000)
    plans = explain(db, claim_statements(engine, db))
    assert_walks_indexes(plans)
    assert any("Index Scan using runs_pkey on runs" in plan for plan in plans), plans


def test_a_run_costs_a_fixed_number_of_statements_from_trigger_to_completion(fresh_postgres):
    """Trigger -> claim -> complete: the statements sent (counted by SQLAlchemy, BEGIN/COMMIT aside), per
    phase, for one run and for ten at once; a batch costs what one run does."""
    db = fresh_postgres
    engine = RunEngine(db)
    engine.register_tasks(["dev"], "v1", [TaskManifest(id="work")])
    engine.context.statistics.enabled = False  # its ANALYZE runs in a thread of its own, not per run
    engine.context._floors.refresh_seconds = 3600  # the fairness floor is re-read once a second, not per run
    engine.trigger("dev", [BatchItem(task="work", options={"priority": -1})])  # reads it once (and stays queued)
    sent: list[str] = []
    sa.event.listen(db.engine, "before_cursor_execute", lambda _c, _cur, statement, *_: sent.append(statement))

    def count(action) -> tuple[int, object]:
        sent.clear()
        result = action()
        return len(sent), result

    for runs in (1, 10):
        triggered, _ = count(lambda n=runs: engine.trigger("dev", [BatchItem(task="work")] * n))
        claimed, assignments = count(lambda n=runs: engine.claim("node-a", ["dev"], ["work"], n))
        assert len(assignments) == runs
        completions = [AttemptCompletion(run_id=a.context.run_id, attempt=1, outcome=AttemptOutcome.OK)
                       for a in assignments]
        # A worker's report, fenced (engine/fencing.py): the check reads the rows the completions lock anyway.
        completed, _ = count(lambda done=completions: engine.report(WorkerReport(node_id="node-a", completions=done)))
        # Measured when written (issue 19): 6 + 3 + 5, down from 6 + 5 + 7 and five commits to three (tasks
        # lookup, runs, events, fairness sequence, ready rows, NOTIFY now in the transaction; planner guard,
        # choice, one statement of writes; lock, one statement of writes, the waits of finished runs (two),
        # NOTIFY in the transaction).
        assert triggered <= 6 and claimed <= 3 and completed <= 5, (triggered, claimed, completed, sent)
        assert all(engine.retrieve("dev", a.context.run_id).status is RunStatus.COMPLETED for a in assignments)
