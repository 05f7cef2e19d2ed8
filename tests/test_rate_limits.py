"""Rate limits of queues in the engine, on a real store (SQLite and PostgreSQL), with a clock the test moves.

The exactness across two runtimes on one PostgreSQL is in tests/e2e/test_rate_limits.py.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

import outlast
from outlast.runtime.access.environments import Environments
from outlast.runtime.engine import RunEngine
from outlast.runtime.store.db import Database
from outlast.wire import AttemptCompletion, AttemptOutcome, BatchItem, QueueOptions, TaskManifest, WorkerReport


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(tmp_path, store, clock):
    db = Database(store or f"sqlite:///{tmp_path / 'engine.db'}")
    db.migrate()
    Environments(db).bootstrap("ol_dev_engine_test_key_0123")
    engine = RunEngine(db, clock=clock)
    rated = QueueOptions.model_validate({"name": "rated", "rate_limit": {"limit": 3, "period": 10}})
    engine.register_tasks(["dev"], "v1", [TaskManifest(id="work", queue=rated), TaskManifest(id="free")])
    yield engine
    db.dispose()


def run_for(engine: RunEngine, clock: Clock, seconds: float, step: float = 0.25) -> list[tuple[float, str]]:
    """Claim every `step` seconds of the test's clock for `seconds`, completing what starts; (time, run id)."""
    started = []
    for _ in range(int(seconds / step)):
        claimed = engine.claim("node-a", ["dev"], ["work", "free"], 20)
        started += [(clock.now, a.context.run_id) for a in claimed]
        engine.report(WorkerReport(completions=[AttemptCompletion(run_id=a.context.run_id, attempt=1,
                                                                  outcome=AttemptOutcome.OK) for a in claimed]))
        clock.now += step
    return started


def most_in_any_window(times: list[float], period: float) -> int:
    return max(sum(1 for t in times if start <= t < start + period) for start in times)


def test_no_period_starts_more_runs_than_the_limit_and_other_queues_are_not_held_up(engine, clock):
    rated = [h.id for h in engine.trigger("dev", [BatchItem(task="work")] * 9)]
    free = [h.id for h in engine.trigger("dev", [BatchItem(task="free")] * 5)]
    started = run_for(engine, clock, 40)
    rated_times = [t for t, run_id in started if run_id in rated]
    assert sorted(run_id for _, run_id in started if run_id in rated) == sorted(rated)
    assert most_in_any_window(rated_times, 10.0) == 3
    gaps = [b - a for a, b in itertools.pairwise(rated_times)]
    assert min(gaps) >= 10 / 3 - 1e-6  # burst 1: evenly spread
    assert {run_id for t, run_id in started if t == started[0][0]} >= set(free)  # the free queue ran at once


def test_a_delayed_run_says_why_in_its_timeline_once(engine, clock):
    first, second = (h.id for h in engine.trigger("dev", [BatchItem(task="work")] * 2))
    assert [a.context.run_id for a in engine.claim("node-a", ["dev"], ["work"], 5)] == [first]
    for _ in range(3):  # claims before its turn find nothing: it waits in the queue, not in the claim
        clock.now += 1
        assert engine.claim("node-a", ["dev"], ["work"], 5) == []
    [event] = [e for e in engine.events("dev", second) if e.kind == "rate_limited"]
    assert "rate limit of queue 'rated' (3 per 10s)" in event.message
    assert event.data["available_at"] == pytest.approx(clock.now - 3 + 10 / 3)
    clock.now += 1
    assert [a.context.run_id for a in engine.claim("node-a", ["dev"], ["work"], 5)] == [second]


def test_each_concurrency_key_and_a_burst_get_their_own_allowance(engine, clock):
    engine.trigger("dev", [BatchItem(task="work", options={"concurrency_key": key}) for key in "aabb"])
    assert sorted(a.context.concurrency_key for a in engine.claim("node-a", ["dev"], ["work"], 10)) == ["a", "b"]
    bursty = {"name": "bursty", "rate_limit": {"limit": 3, "period": 60, "burst": 3}}
    engine.trigger("dev", [BatchItem(task="free", options={"queue": bursty})] * 5)
    assert len(engine.claim("node-a", ["dev"], ["free"], 10)) == 3


def test_bad_rate_limits_are_refused_naming_the_field():
    for bad, field in [("10/fortnight", "rate_limit.period"), ({"limit": 0, "period": 1}, "rate_limit.limit"),
                       ({"limit": 5, "period": float("inf")}, "rate_limit.period"),
                       ({"limit": 2, "period": 1, "burst": 3}, "rate_limit"), ("ten/m", "rate_limit")]:
        with pytest.raises(outlast.InvalidRequestError) as caught:
            outlast.queue("q", rate_limit=bad)
        assert caught.value.field == field, bad
    assert outlast.queue("q", rate_limit="10/m").rate_limit.interval == 6.0
