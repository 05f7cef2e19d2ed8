"""Debounce in the engine, on a real store (SQLite or PostgreSQL), with a clock the test moves."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from outlast.runtime.access.environments import Environments
from outlast.runtime.engine import RunEngine
from outlast.runtime.store.db import Database
from outlast.wire import BatchItem, RunStatus, TaskManifest, TriggerOptions
from tests.test_engine import Clock


@pytest.fixture
def engine(tmp_path, store):
    db = Database(store or f"sqlite:///{tmp_path / 'debounce.db'}")
    db.migrate()
    environments = Environments(db)
    environments.bootstrap("ol_dev_debounce_test_key_0123")
    engine = RunEngine(db, clock=Clock())  # tests move it: engine.clock.now += ...
    engine.register_tasks(["dev", "prod"], "v1", [TaskManifest(id="work"), TaskManifest(id="other")])
    yield engine
    db.dispose()


def debounced(task: str = "work", payload=None, *, key: str = "k", delay: float = 5, max_delay: float | None = None,
              mode: str = "trailing", tags=()) -> BatchItem:
    debounce = {"key": key, "delay": delay, "mode": mode, **({"max_delay": max_delay} if max_delay else {})}
    return BatchItem(task=task, payload=payload, options=TriggerOptions(debounce=debounce, tags=list(tags)))


def trigger(engine: RunEngine, item: BatchItem, env: str = "dev") -> str:
    return engine.trigger(env, [item])[0].id


def test_trailing_collapses_into_one_delayed_run_with_the_last_payload(engine):
    first = trigger(engine, debounced(payload=1, tags=["a"]))
    engine.clock.now += 3
    second = trigger(engine, debounced(payload=2, tags=["b"]))
    engine.clock.now += 4  # 7 s after the first: past its own delay, but within 5 s of the last trigger
    engine.tick()
    third = trigger(engine, debounced(payload=3, tags=["c"]))
    assert first == second == third
    run = engine.retrieve("dev", first)
    assert (run.status, run.payload, run.tags) == (RunStatus.DELAYED, 3, ["c"])
    assert run.delay_until.timestamp() == engine.clock.now + 5
    assert [r.id for r in engine.list_runs("dev", tag=["c"]).data] == [first]
    assert engine.list_runs("dev", tag=["a"]).data == []
    engine.clock.now += 5
    engine.tick()
    assert engine.retrieve("dev", first).status is RunStatus.QUEUED
    # The window closed with the start: the next trigger opens a new one.
    fourth = trigger(engine, debounced(payload=4))
    assert fourth != first
    assert engine.retrieve("dev", fourth).status is RunStatus.DELAYED
    assert "debounced" in [event.kind for event in engine.events("dev", first)]


def test_trailing_never_starts_later_than_max_delay_after_the_first_trigger(engine):
    start = engine.clock.now
    first = trigger(engine, debounced(payload=0, delay=5, max_delay=12))
    ids = {first}
    for step in range(1, 4):  # triggers every 3 s keep pushing the start... up to first + 12 s
        engine.clock.now = start + 3 * step
        ids.add(trigger(engine, debounced(payload=step, delay=5, max_delay=12)))
    assert ids == {first}
    run = engine.retrieve("dev", first)
    assert run.delay_until.timestamp() == start + 12 and run.payload == 3
    engine.clock.now = start + 12
    engine.tick()
    assert engine.retrieve("dev", first).status is RunStatus.QUEUED
    assert trigger(engine, debounced(payload=9, delay=5, max_delay=12)) != first


def test_leading_runs_the_first_trigger_at_once_and_returns_it_within_the_window(engine):
    start = engine.clock.now
    first = trigger(engine, debounced(payload="first", mode="leading", delay=5, max_delay=8))
    assert engine.retrieve("dev", first).status is RunStatus.QUEUED
    engine.clock.now = start + 4
    assert trigger(engine, debounced(payload="second", mode="leading", delay=5, max_delay=8)) == first
    engine.clock.now = start + 7  # within 5 s of the last trigger and within max_delay
    assert trigger(engine, debounced(payload="third", mode="leading", delay=5, max_delay=8)) == first
    assert engine.retrieve("dev", first).payload == "first"
    engine.clock.now = start + 8  # max_delay after the first trigger: a new window
    assert trigger(engine, debounced(payload="fourth", mode="leading", delay=5, max_delay=8)) != first


def test_leading_window_ends_after_a_quiet_delay(engine):
    first = trigger(engine, debounced(mode="leading", delay=5))
    engine.clock.now += 5
    assert trigger(engine, debounced(mode="leading", delay=5)) != first


def test_keys_are_scoped_to_environment_and_task(engine):
    dev = trigger(engine, debounced(key="same"))
    assert trigger(engine, debounced(key="same"), env="prod") != dev
    assert trigger(engine, debounced("other", key="same")) != dev
    assert trigger(engine, debounced(key="else")) != dev
    assert trigger(engine, debounced(key="same")) == dev


def test_a_cancelled_window_run_is_not_reused(engine):
    first = trigger(engine, debounced(payload=1))
    engine.cancel("dev", first)
    second = trigger(engine, debounced(payload=2))
    assert second != first
    assert engine.retrieve("dev", first).payload == 1
    assert engine.retrieve("dev", second).status is RunStatus.DELAYED


def test_a_batch_with_one_key_several_times_makes_one_run_with_the_last_payload(engine):
    handles = engine.trigger("dev", [debounced(payload=1), debounced(payload=2, key="x"), debounced(payload=3)])
    assert handles[0].id == handles[2].id != handles[1].id
    assert engine.retrieve("dev", handles[0].id).payload == 3
    assert trigger(engine, debounced(payload=4)) == handles[0].id


def test_an_idempotency_key_that_matched_wins(engine):
    keyed = BatchItem(task="work", payload=1, options=TriggerOptions(idempotency_key="once"))
    first = trigger(engine, keyed)
    both = BatchItem(task="work", payload=2, options=TriggerOptions(idempotency_key="once", debounce={
        "key": "k", "delay": 5}))
    handle = engine.trigger("dev", [both])[0]
    assert handle.id == first and handle.is_cached
    assert engine.retrieve("dev", first).payload == 1


def test_rows_of_long_closed_windows_are_deleted_and_the_key_starts_afresh(engine):
    from outlast.runtime.store.schema import debounce_keys

    first = trigger(engine, debounced(mode="leading", delay=5))
    engine.clock.now += 2 * 3600
    engine.tick()
    with engine.db.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(debounce_keys)).scalar() == 0
    second = trigger(engine, debounced(mode="leading", delay=5))
    assert second != first
    assert trigger(engine, debounced(mode="leading", delay=5)) == second


def test_a_cancelled_leading_run_is_not_returned_again(engine):
    first = trigger(engine, debounced(mode="leading", delay=60))
    engine.cancel("dev", first)
    second = trigger(engine, debounced(mode="leading", delay=60))
    assert second != first and engine.retrieve("dev", second).status is RunStatus.QUEUED
