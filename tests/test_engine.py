"""Engine transitions that the end-to-end tests cannot reach on purpose, on a real store (SQLite or PostgreSQL)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from outlast.runtime.access.environments import Environments
from outlast.runtime.checkpoint.retention import ImageDeleter
from outlast.runtime.engine import RunEngine
from outlast.runtime.engine.fencing import StaleAttempts
from outlast.runtime.errors import RunNotFound, UnknownTask
from outlast.runtime.store import queue
from outlast.runtime.store.db import Database
from outlast.runtime.store.schema import run_events
from outlast.wire import (
    AttemptCompletion,
    AttemptOutcome,
    BatchItem,
    CheckpointMode,
    CreateTokenRequest,
    LeasedAttempt,
    RunStatus,
    SuspendRequest,
    TaskManifest,
    TriggerOptions,
    WaitpointKind,
    WaitRequest,
    WaitSpec,
    WorkerReport,
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


class Images:
    """A checkpoint store that records deletions (and fails for keys named "broken")."""

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete(self, key: str) -> None:
        if key == "broken":
            raise OSError("disk on fire")
        self.deleted.append(key)


@pytest.fixture
def database(tmp_path, store):
    db = Database(store or f"sqlite:///{tmp_path / 'engine.db'}")
    db.migrate()
    Environments(db).bootstrap("ol_dev_engine_test_key_0123")
    yield db
    db.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def images() -> Images:
    return Images()


@pytest.fixture
def engine(database, clock, images):
    engine = RunEngine(database, clock=clock, images=ImageDeleter(images))
    engine.register_tasks(["dev"], "v1", [TaskManifest(id="work")])
    return engine


def checkpointed(engine: RunEngine, clock: Clock, image_key: str) -> str:
    """A run whose attempt waits (for a minute) and was checkpointed with CRIU as `image_key`."""
    run_id = engine.trigger("dev", [BatchItem(task="work")])[0].id
    engine.claim("node-a", ["dev"], ["work"], 1)
    spec = WaitSpec(kind=WaitpointKind.DATETIME, until=datetime.fromtimestamp(clock.now, UTC) + timedelta(minutes=1))
    [state] = engine.waits.wait(WaitRequest(node_id="node-a", run_id=run_id, attempt=1, key="w", spec=spec))
    engine.waits.suspend(SuspendRequest(node_id="node-a", run_id=run_id, attempt=1, mode=CheckpointMode.CRIU,
                                        waiting=[state.id], image_key=image_key))
    return run_id


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


def test_a_report_from_a_node_that_lost_the_attempt_is_refused_whole(engine, clock):
    """Fencing (engine/fencing.py) on the rows the report locks: node-a's attempt was crashed and
    retried on node-b; node-a's late report changes nothing, and node-b's own lands."""
    run_id = engine.trigger("dev", [BatchItem(task="work")])[0].id
    engine.claim("node-a", ["dev"], ["work"], 1)
    engine.report(WorkerReport(completions=[AttemptCompletion(run_id=run_id, attempt=1,
                                                              outcome=AttemptOutcome.CRASHED)]))
    clock.now += 3600  # past the retry's backoff
    assert [a.context.attempt for a in engine.claim("node-b", ["dev"], ["work"], 1)] == [2]
    for late in (AttemptCompletion(run_id=run_id, attempt=1, outcome=AttemptOutcome.OK, output="late"),
                 AttemptCompletion(run_id=run_id, attempt=2, outcome=AttemptOutcome.OK, output="not node-a's")):
        with pytest.raises(StaleAttempts) as refused:
            engine.report(WorkerReport(node_id="node-a", completions=[late]))
        assert refused.value.stale == [(run_id, late.attempt)]
    run = engine.retrieve("dev", run_id)
    assert (run.status, run.output, run.attempts) == (RunStatus.EXECUTING, None, 2)
    engine.report(WorkerReport(node_id="node-b", completions=[AttemptCompletion(
        run_id=run_id, attempt=2, outcome=AttemptOutcome.OK, output="b")]))
    run = engine.retrieve("dev", run_id)
    assert (run.status, run.output) == (RunStatus.COMPLETED, "b")


def test_concurrent_single_triggers_each_get_their_own_run_or_their_own_refusal(engine):
    """Group commit (engine/trigger_groups.py) on a real store: 16 threads of single triggers, some with
    one idempotency key, some of an unknown task."""
    items = ([BatchItem(task="work", payload=n) for n in range(40)]
             + [BatchItem(task="work", payload="keyed", options=TriggerOptions(idempotency_key="k"))] * 10
             + [BatchItem(task="missing")] * 2)

    def answer(item: BatchItem):
        try:
            return engine.trigger("dev", [item])[0]
        except UnknownTask as exc:
            return exc

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(answer, items))
    plain, keyed, missing = answers[:40], answers[40:50], answers[50:]
    assert len({h.id for h in plain}) == 40 and not any(h.is_cached for h in plain)
    assert [engine.retrieve("dev", h.id).payload for h in plain] == list(range(40))
    assert len({h.id for h in keyed}) == 1 and sum(not h.is_cached for h in keyed) == 1
    assert all(isinstance(exc, UnknownTask) for exc in missing)
    assert engine.triggering.groups.calls == len(items)  # every call went through the groups
    assert len(engine.list_runs("dev", limit=100).data) == 41


def test_finished_runs_past_their_retention_are_deleted_with_their_timeline(engine, clock):
    """OUTLAST_RUN_RETENTION (store/retention.py), swept by the engine's tick: what finished long enough
    ago goes, what is live, finished recently or holds a live idempotency key stays."""
    retention = engine.timers.retention
    assert retention.seconds == 0  # the default keeps every run
    retention.seconds = 3600

    def finished(**options) -> str:
        run_id = engine.trigger("dev", [BatchItem(task="work", options=TriggerOptions(**options))])[0].id
        [assignment] = engine.claim("node-a", ["dev"], ["work"], 1)
        engine.report(WorkerReport(completions=[AttemptCompletion(run_id=run_id, attempt=assignment.context.attempt,
                                                                  outcome=AttemptOutcome.OK)]))
        return run_id

    old = finished(tags=["old"])
    keyed = finished(idempotency_key="still-live", idempotency_key_ttl=2 * 86400)
    canceled = engine.trigger("dev", [BatchItem(task="work")])[0].id
    engine.cancel("dev", canceled)
    clock.now += 2 * 3600
    recent = finished()
    queued = engine.trigger("dev", [BatchItem(task="work")])[0].id  # never claimed
    engine.tick()
    assert retention.deleted == 2
    for run_id in (old, canceled):
        with pytest.raises(RunNotFound):
            engine.retrieve("dev", run_id)
    with engine.db.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(run_events).where(
            run_events.c.run_id.in_([old, canceled]))).scalar() == 0
    assert [engine.retrieve("dev", r).status for r in (keyed, recent, queued)] == [
        RunStatus.COMPLETED, RunStatus.COMPLETED, RunStatus.QUEUED]
    assert engine.trigger("dev", [BatchItem(task="work", options=TriggerOptions(idempotency_key="still-live"))])[0].id \
        == keyed


def test_canceling_a_checkpointed_run_deletes_its_image_and_a_failed_delete_is_only_logged(engine, clock, images,
                                                                                             caplog):
    engine.cancel("dev", checkpointed(engine, clock, "img/1"))
    assert images.deleted == ["img/1"]
    with caplog.at_level(logging.ERROR):
        run = engine.cancel("dev", checkpointed(engine, clock, "broken"))
    assert run.status is RunStatus.CANCELED
    assert "could not delete checkpoint image broken" in caplog.text


def test_an_expired_idempotency_key_starts_one_new_run_however_often_a_batch_repeats_it(engine, clock):
    options = TriggerOptions(idempotency_key="nightly", idempotency_key_ttl=60)
    [first] = engine.trigger("dev", [BatchItem(task="work", options=options)])
    [again] = engine.trigger("dev", [BatchItem(task="work", options=options)])
    assert (again.id, again.is_cached) == (first.id, True)
    clock.now += 61
    second, repeated = engine.trigger("dev", [BatchItem(task="work", options=options)] * 2)
    assert second.id != first.id and not second.is_cached
    assert (repeated.id, repeated.is_cached) == (second.id, True)
    assert engine.retrieve("dev", first.id).idempotency_key is None  # the old run gave its key up


def test_a_claim_of_a_fresh_run_and_a_checkpointed_one_resumes_the_checkpointed_one(engine, clock):
    resuming = checkpointed(engine, clock, "img/2")
    fresh = engine.trigger("dev", [BatchItem(task="work")])[0].id
    clock.now += 61
    engine.tick()  # the wait is over: the checkpointed run is queued to resume
    claimed = {a.context.run_id: a for a in engine.claim("node-b", ["dev"], ["work"], 5)}
    assert set(claimed) == {resuming, fresh}
    assert claimed[resuming].resume is not None and claimed[resuming].context.attempt == 1


def test_a_heartbeat_scoped_to_one_environment_neither_extends_nor_reads_another_environments(engine, clock):
    """The worker API's heartbeat with the dev key and a prod run and waitpoint: no lease, no output."""
    engine.register_tasks(["prod"], "v1", [TaskManifest(id="work")])
    run_id = engine.trigger("prod", [BatchItem(task="work")])[0].id
    engine.claim("node-a", ["prod"], ["work"], 1)
    token = engine.waits.create_token("prod", CreateTokenRequest())
    engine.waits.complete_token("prod", token.id, {"secret": "prod's"})
    lease = engine.retrieve("prod", run_id)
    leased = [LeasedAttempt(run_id=run_id, attempt=1, waiting=[token.id])]
    clock.now += 10

    foreign = engine.heartbeat("node-a", leased, env_ids=["dev"])
    assert (foreign.stop, foreign.completed) == ([run_id], [])
    assert engine.retrieve("prod", run_id).model_dump() == lease.model_dump()  # lease not extended

    own = engine.heartbeat("node-a", leased, env_ids=["prod"])
    assert own.stop == []
    assert [(r.id, r.output) for r in own.completed] == [(token.id, {"secret": "prod's"})]
