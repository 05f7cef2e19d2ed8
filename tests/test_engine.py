"""Engine transitions that the end-to-end tests cannot reach on purpose, on a real store (SQLite or PostgreSQL)."""

from __future__ import annotations

import pytest

from outlast.runtime.access.environments import Environments
from outlast.runtime.engine import RunEngine
from outlast.runtime.store import queue
from outlast.runtime.store.db import Database
from outlast.wire import AttemptCompletion, AttemptOutcome, BatchItem, RunStatus, TaskManifest, WorkerReport


@pytest.fixture
def engine(tmp_path, store):
    db = Database(store or f"sqlite:///{tmp_path / 'engine.db'}")
    db.migrate()
    Environments(db).bootstrap("ol_dev_engine_test_key_0123")
    engine = RunEngine(db)
    engine.register_tasks(["dev"], "v1", [TaskManifest(id="work")])
    yield engine
    db.dispose()


def test_a_released_attempt_goes_back_to_the_queue_without_counting(engine):
    run_id = engine.trigger("dev", [BatchItem(task="work")])[0].id
    [assignment] = engine.claim("node-a", ["dev"], ["work"], 1)
    assert assignment.context.attempt == 1
    engine.report(WorkerReport(completions=[AttemptCompletion(run_id=run_id, attempt=1,
                                                              outcome=AttemptOutcome.RELEASED)]))
    run = engine.retrieve("dev", run_id)
    assert run.status is RunStatus.QUEUED
    assert run.attempts == 0
    [again] = engine.claim("node-b", ["dev"], ["work"], 1)
    assert (again.context.run_id, again.context.attempt) == (run_id, 1)


def test_a_stale_ready_row_of_a_canceled_run_is_never_started(engine):
    run_id = engine.trigger("dev", [BatchItem(task="work")])[0].id
    engine.cancel("dev", run_id)
    run = engine.retrieve("dev", run_id)
    # The row a cancel can miss when it races a delay's end: put it back by hand.
    with engine.db.begin() as connection:
        queue.enqueue(connection, [queue.ReadyRun(run_id=run_id, env_id="dev", task_id="work", queue=run.queue,
                                                  concurrency_key=None, priority=0, available_at=0)])
    assert engine.claim("node-a", ["dev"], ["work"], 5) == []
    assert engine.retrieve("dev", run_id).status is RunStatus.CANCELED
    # Its concurrency slot was given back: the next run starts.
    next_id = engine.trigger("dev", [BatchItem(task="work")])[0].id
    assert [a.context.run_id for a in engine.claim("node-a", ["dev"], ["work"], 5)] == [next_id]


def test_a_late_answer_from_a_crashed_attempt_is_ignored(engine):
    run_id = engine.trigger("dev", [BatchItem(task="work")])[0].id
    engine.claim("node-a", ["dev"], ["work"], 1)
    crashed = AttemptCompletion(run_id=run_id, attempt=1, outcome=AttemptOutcome.CRASHED)
    engine.report(WorkerReport(completions=[crashed]))
    assert engine.retrieve("dev", run_id).status is RunStatus.QUEUED  # waiting out its retry backoff
    late = AttemptCompletion(run_id=run_id, attempt=1, outcome=AttemptOutcome.OK, output="late")
    engine.report(WorkerReport(completions=[late]))
    run = engine.retrieve("dev", run_id)
    assert (run.status, run.output, run.attempts) == (RunStatus.QUEUED, None, 1)
