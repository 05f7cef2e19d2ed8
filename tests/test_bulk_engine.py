"""Bulk actions in the engine, on a real store (SQLite or PostgreSQL): chunks, the cursor, the filter, scope."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from outlast.runtime.access.environments import Environments
from outlast.runtime.engine import RunEngine
from outlast.runtime.store.db import Database
from outlast.runtime.store.schema import bulk_action_runs, bulk_actions, runs
from outlast.wire import BatchItem, BulkActionCreate, BulkActionState, RunStatus, TaskManifest, TriggerOptions
from tests.test_engine import Clock


@pytest.fixture
def engine(tmp_path, store):
    db = Database(store or f"sqlite:///{tmp_path / 'bulk.db'}")
    db.migrate()
    Environments(db).bootstrap("ol_dev_bulk_test_key_0123456")
    engine = RunEngine(db, clock=Clock())  # tests move it: engine.clock.now += ...
    engine.register_tasks(["dev", "prod"], "v1", [
        TaskManifest(id="work"), TaskManifest(id="other"),
        TaskManifest(id="strict", payload_schema={"type": "object", "required": ["n"]})])
    engine.bulk.chunk = 7
    yield engine
    db.dispose()


def items(task: str, count: int, *, tags=(), payload=None) -> list[BatchItem]:
    return [BatchItem(task=task, payload=payload if payload is not None else {"n": n},
                      options=TriggerOptions(tags=list(tags))) for n in range(count)]


def finish(engine: RunEngine, job_id: str, env: str = "dev"):
    steps = 0
    while engine.bulk.step():
        steps += 1
        assert steps < 1000
    return engine.bulk.retrieve(env, job_id), steps


def test_cancel_by_task_and_tag_in_chunks_leaves_the_rest(engine):
    doomed = {h.id for h in engine.trigger("dev", items("work", 20, tags=["t"]))}
    kept = [h.id for h in engine.trigger("dev", items("work", 3))]  # no tag
    kept += [h.id for h in engine.trigger("dev", items("other", 3, tags=["t"]))]
    kept += [h.id for h in engine.trigger("prod", items("work", 3, tags=["t"]))]  # another environment
    job = engine.bulk.create("dev", BulkActionCreate(action="cancel", filter={"task": "work", "tag": ["t"]}))
    assert (job.state, job.total, job.processed) == (BulkActionState.PENDING, 20, 0)
    job, steps = finish(engine, job.id)
    assert steps == 3  # 7 + 7 + 6
    assert (job.state, job.processed, job.succeeded, job.skipped) == (BulkActionState.COMPLETED, 20, 20, 0)
    for run_id in doomed:
        assert engine.retrieve("dev", run_id).status is RunStatus.CANCELED
    for run_id in kept:
        env = "prod" if run_id in kept[-3:] else "dev"
        assert engine.retrieve(env, run_id).status is RunStatus.QUEUED
    with pytest.raises(Exception, match="not found"):
        engine.bulk.retrieve("prod", job.id)


def test_replay_makes_one_new_run_per_match_and_not_of_its_own_replays(engine):
    originals = [h.id for h in engine.trigger("dev", items("work", 10))]
    for run_id in originals[:4]:
        engine.cancel("dev", run_id)
    job = engine.bulk.create("dev", BulkActionCreate(action="replay", filter={"task": ["work"]}))
    job, _ = finish(engine, job.id)
    assert (job.total, job.processed, job.succeeded) == (10, 10, 10)
    with engine.db.connect() as c:
        replayed = c.execute(sa.select(runs.c.replayed_from, sa.func.count()).where(
            runs.c.replayed_from.is_not(None)).group_by(runs.c.replayed_from)).all()
    assert sorted(replayed) == sorted((run_id, 1) for run_id in originals)


def test_replay_skips_runs_whose_payload_no_longer_fits(engine):
    engine.trigger("dev", items("strict", 2))
    engine.register_tasks(["dev"], "v2", [TaskManifest(id="strict", payload_schema={
        "type": "object", "required": ["m"]})])
    job = engine.bulk.create("dev", BulkActionCreate(action="replay", filter={"task": ["strict"]}))
    job, _ = finish(engine, job.id)
    assert (job.processed, job.succeeded, job.skipped) == (2, 0, 2)
    assert "payload" in job.error


def test_cancel_counts_finished_runs_as_skipped(engine):
    ids = [h.id for h in engine.trigger("dev", items("work", 5))]
    engine.cancel("dev", ids[0])
    job = engine.bulk.create("dev", BulkActionCreate(action="cancel", filter={"task": ["work"]}))
    job, _ = finish(engine, job.id)
    assert (job.processed, job.succeeded, job.skipped) == (5, 4, 1)
    events = [e for e in engine.events("dev", ids[0]) if e.data.get("status") == "CANCELED"]
    assert len(events) == 1


def test_a_job_with_nothing_to_do_is_complete_at_once(engine):
    job = engine.bulk.create("dev", BulkActionCreate(action="cancel", filter={"task": ["nothing"]}))
    assert (job.state, job.total) == (BulkActionState.COMPLETED, 0)
    assert engine.bulk.step() is False


def test_a_chunk_that_fails_changes_nothing_and_is_done_again(engine, monkeypatch):
    ids = [h.id for h in engine.trigger("dev", items("work", 10))]
    job = engine.bulk.create("dev", BulkActionCreate(action="replay", filter={"task": ["work"]}))
    real = engine.triggering.new_runs

    def broken(*args, **kwargs):
        batch = real(*args, **kwargs)
        batch.write = lambda: (_ for _ in ()).throw(RuntimeError("killed mid-chunk"))
        return batch

    monkeypatch.setattr(engine.triggering, "new_runs", broken)
    with pytest.raises(RuntimeError):
        engine.bulk.step()
    with engine.db.connect() as c:
        row = c.execute(sa.select(bulk_actions)).one()
        assert (row.processed, row.cursor) == (0, None)
        assert c.execute(sa.select(sa.func.count()).select_from(bulk_action_runs)).scalar() == 10
        assert c.execute(sa.select(sa.func.count()).where(runs.c.replayed_from.is_not(None))).scalar() == 0
    monkeypatch.setattr(engine.triggering, "new_runs", real)
    job, _ = finish(engine, job.id)
    assert job.succeeded == 10
    with engine.db.connect() as c:
        replayed = c.execute(sa.select(runs.c.replayed_from).where(runs.c.replayed_from.is_not(None))).scalars()
        assert sorted(replayed) == sorted(ids)


def test_a_run_that_no_longer_matches_when_its_chunk_comes_is_skipped(engine):
    ids = [h.id for h in engine.trigger("dev", items("work", 5))]
    job = engine.bulk.create("dev", BulkActionCreate(action="cancel", filter={"status": ["QUEUED"], "task": ["work"]}))
    started = engine.claim("node-1", ["dev"], ["work"], 2)  # two of them start before the job gets to them
    assert len(started) == 2
    job, _ = finish(engine, job.id)
    assert (job.total, job.processed, job.succeeded, job.skipped) == (5, 5, 3, 2)
    statuses = {run_id: engine.retrieve("dev", run_id).status for run_id in ids}
    assert sorted(statuses.values()) == [RunStatus.CANCELED] * 3 + [RunStatus.EXECUTING] * 2
