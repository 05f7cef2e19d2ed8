"""The scheduler on a real store (SQLite or PostgreSQL) with a simulated clock: ticks, catch-up, exactness."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from outlast import schedules
from outlast.runtime.access.environments import Environments
from outlast.runtime.engine import RunEngine
from outlast.runtime.engine.cron import InvalidSchedule, check, latest_tick, ticks_after
from outlast.runtime.engine.schedules import Scheduler, sync_declarative
from outlast.runtime.errors import Conflict, UnknownTask
from outlast.runtime.store.db import Database
from outlast.wire import (
    BatchItem,
    CatchUp,
    ScheduleCreate,
    ScheduleSpec,
    ScheduleType,
    ScheduleUpdate,
    TaskManifest,
    TriggerOptions,
)

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment.timestamp()

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def database(tmp_path, store):
    db = Database(store or f"sqlite:///{tmp_path / 'scheduler.db'}")
    db.migrate()
    Environments(db).bootstrap("ol_dev_scheduler_test_key_01")
    yield db
    db.dispose()


@pytest.fixture
def scheduler(database, clock) -> Scheduler:
    engine = RunEngine(database, clock=clock, register_hooks=[sync_declarative])
    scheduler = Scheduler(engine)
    engine.register_tasks(["dev"], "v1", [TaskManifest(id="work"), TaskManifest(id="other")])
    return scheduler


def create(scheduler: Scheduler, cron: str, **fields) -> str:
    return scheduler.create("dev", ScheduleCreate(task=fields.pop("task", "work"), cron=cron, **fields)).id


def runs_of(scheduler: Scheduler, schedule_id: str) -> list:
    """The schedule's runs, oldest tick first."""
    runs = scheduler.engine.list_runs("dev", tag=[schedules.schedule_tag(schedule_id)], limit=500).data
    return sorted(runs, key=lambda run: run.payload["timestamp"])


def ticks(scheduler: Scheduler, schedule_id: str, zone: ZoneInfo) -> list[str]:
    return [datetime.fromisoformat(r.payload["timestamp"]).astimezone(zone).isoformat() for r in
            runs_of(scheduler, schedule_id)]


def local(timestamps, zone: ZoneInfo) -> list[str]:
    return [datetime.fromtimestamp(t, zone).isoformat() for t in timestamps]


# --- tick computation: daylight saving -----------------------------------------------------------


@pytest.mark.parametrize(("zone", "cron", "start", "expected"), [
    # Spring forward: 02:30 does not exist that night; the daily tick fires once, at 03:00.
    (PARIS, "30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=PARIS),
     ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
    (NEW_YORK, "30 2 * * *", datetime(2026, 3, 7, 12, tzinfo=NEW_YORK),
     ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
    # Fall back: 02:30 (Paris) and 01:30 (New York) happen twice; the daily tick fires at the first only.
    (PARIS, "30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=PARIS),
     ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
    (NEW_YORK, "30 1 * * *", datetime(2026, 10, 31, 12, tzinfo=NEW_YORK),
     ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
    # A daily time away from the change is untouched by it.
    (PARIS, "0 9 * * *", datetime(2026, 3, 28, 12, tzinfo=PARIS),
     ["2026-03-29T09:00:00+02:00", "2026-03-30T09:00:00+02:00"]),
])
def test_a_daily_tick_is_neither_skipped_nor_doubled_across_daylight_saving(zone, cron, start, expected):
    assert local(ticks_after(cron, zone.key, start.timestamp(), 2), zone) == expected


def test_an_hourly_schedule_keeps_its_real_time_rhythm_through_both_changes():
    start = datetime(2026, 10, 25, 0, 0, tzinfo=PARIS).timestamp()
    autumn = ticks_after("30 * * * *", "Europe/Paris", start, 25)  # that day has 25 hours
    assert all(b - a == 3600 for a, b in itertools.pairwise(autumn))
    assert local(autumn[2:4], PARIS) == ["2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"]
    start = datetime(2026, 3, 8, 0, 0, tzinfo=NEW_YORK).timestamp()
    spring = ticks_after("30 * * * *", "America/New_York", start, 23)  # and that one 23
    assert all(b - a == 3600 for a, b in itertools.pairwise(spring))
    assert datetime.fromtimestamp(spring[-1], NEW_YORK).day == 8


def test_the_latest_tick_at_or_before_a_moment():
    now = datetime(2026, 10, 25, 4, 0, tzinfo=PARIS).timestamp()
    assert local([latest_tick("30 2 * * *", "Europe/Paris", now)], PARIS) == ["2026-10-25T02:30:00+02:00"]
    exact = datetime(2026, 1, 1, 3, 0, tzinfo=PARIS).timestamp()
    assert latest_tick("0 3 * * *", "Europe/Paris", exact) == exact


def test_the_scheduler_fires_one_run_per_day_across_both_changes(scheduler, clock):
    clock.set(datetime(2026, 3, 27, 12, tzinfo=UTC))
    paris = create(scheduler, "30 2 * * *", timezone="Europe/Paris")
    new_york = create(scheduler, "30 1 * * *", timezone="America/New_York")
    for start in (datetime(2026, 3, 27, 12, tzinfo=UTC), datetime(2026, 10, 23, 12, tzinfo=UTC)):
        clock.set(start)
        scheduler.set_active("dev", paris, False)
        scheduler.set_active("dev", paris, True)
        scheduler.set_active("dev", new_york, False)
        scheduler.set_active("dev", new_york, True)
        for _ in range(24 * 10):  # ten days, a loop every hour
            clock.advance(3600)
            scheduler.tick()
    assert ticks(scheduler, paris, PARIS) == [
        "2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", *[f"2026-{d}T02:30:00+02:00" for d in (
            "03-30", "03-31", "04-01", "04-02", "04-03", "04-04", "04-05", "04-06", "10-24", "10-25")],
        *[f"2026-{d}T02:30:00+01:00" for d in ("10-26", "10-27", "10-28", "10-29", "10-30", "10-31", "11-01",
                                               "11-02")],
    ]
    new_york_ticks = ticks(scheduler, new_york, NEW_YORK)
    assert len(new_york_ticks) == len(set(t[:10] for t in new_york_ticks)) == 20  # one a day, every day
    assert "2026-11-01T01:30:00-04:00" in new_york_ticks and "2026-11-01T01:30:00-05:00" not in new_york_ticks


# --- firing --------------------------------------------------------------------------------------


def test_a_scheduled_run_carries_its_tick_and_the_schedule(scheduler, clock):
    clock.set(datetime(2026, 6, 1, 8, 59, 30, tzinfo=UTC))
    schedule_id = create(scheduler, "0 * * * *", timezone="Europe/Paris", external_id="tenant_42")
    clock.advance(45)  # 15 s past the tick: the loop was late
    assert scheduler.tick() == 1
    clock.advance(3600)
    assert scheduler.tick() == 1
    first, second = runs_of(scheduler, schedule_id)
    assert first.payload == {
        "type": "IMPERATIVE", "timestamp": "2026-06-01T09:00:00+00:00", "last_timestamp": None,
        "timezone": "Europe/Paris", "schedule_id": schedule_id, "external_id": "tenant_42",
        "upcoming": [f"2026-06-01T{h}:00:00+00:00" for h in (10, 11, 12, 13, 14)],
    }
    assert second.payload["timestamp"] == "2026-06-01T10:00:00+00:00"
    assert second.payload["last_timestamp"] == "2026-06-01T09:00:00+00:00"
    assert first.idempotency_key == f"schedule:{schedule_id}:{datetime(2026, 6, 1, 9, tzinfo=UTC).timestamp():.0f}"
    schedule = scheduler.retrieve("dev", schedule_id)
    assert schedule.last_timestamp == datetime(2026, 6, 1, 10, tzinfo=UTC)
    assert schedule.next_run == datetime(2026, 6, 1, 11, tzinfo=UTC)


def test_a_tick_fires_once_however_often_the_loop_runs(scheduler, clock):
    schedule_id = create(scheduler, "*/5 * * * *")
    clock.advance(300)
    fired = [scheduler.tick() for _ in range(5)]
    assert sum(fired) == 1
    assert len(runs_of(scheduler, schedule_id)) == 1


def test_a_tick_that_already_has_its_run_gets_no_second_one(scheduler, clock):
    # The store's unique key on (schedule, tick) is the run's idempotency key: here a run for the
    # next tick exists already, as if another replica had created it.
    schedule_id = create(scheduler, "*/5 * * * *")
    tick = scheduler.retrieve("dev", schedule_id).next_run.timestamp()
    options = TriggerOptions(idempotency_key=f"schedule:{schedule_id}:{tick:.0f}",
                             tags=[schedules.schedule_tag(schedule_id)])
    [existing] = scheduler.engine.trigger("dev", [BatchItem(task="work", payload="first", options=options)])
    clock.advance(300)
    scheduler.tick()
    assert [run.id for run in runs_of_any(scheduler, schedule_id)] == [existing.id]
    assert scheduler.retrieve("dev", schedule_id).next_run.timestamp() == tick + 300
    clock.advance(300)
    assert scheduler.tick() == 1 and len(runs_of_any(scheduler, schedule_id)) == 2


def runs_of_any(scheduler: Scheduler, schedule_id: str) -> list:
    return scheduler.engine.list_runs("dev", tag=[schedules.schedule_tag(schedule_id)]).data[::-1]


def test_two_schedulers_on_one_store_never_double_fire(database, scheduler, clock, store):
    ids = [create(scheduler, "* * * * * *") for _ in range(20)]  # every second
    replicas = [scheduler]
    other_db = Database(store or str(database.engine.url))  # a second pool, as a second process has
    replicas.append(Scheduler(RunEngine(other_db, clock=clock)))
    try:
        for _ in range(5):
            clock.advance(1)
            barrier = threading.Barrier(len(replicas))

            def run(replica: Scheduler, barrier: threading.Barrier) -> None:
                barrier.wait()
                replica.tick()

            threads = [threading.Thread(target=run, args=(r, barrier)) for r in replicas]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        other_db.dispose()
    for schedule_id in ids:
        stamps = [run.payload["timestamp"] for run in runs_of(scheduler, schedule_id)]
        assert len(stamps) == len(set(stamps)) == 5


# --- catch-up after downtime ----------------------------------------------------------------------


def test_after_downtime_the_most_recent_missed_tick_fires_once(scheduler, clock):
    clock.set(datetime(2026, 6, 1, 8, 30, tzinfo=UTC))
    schedule_id = create(scheduler, "0 * * * *")
    clock.set(datetime(2026, 6, 1, 18, 40, tzinfo=UTC))  # down across ten ticks
    assert scheduler.tick() == 1
    assert [r.payload["timestamp"] for r in runs_of(scheduler, schedule_id)] == ["2026-06-01T18:00:00+00:00"]
    assert scheduler.retrieve("dev", schedule_id).next_run == datetime(2026, 6, 1, 19, tzinfo=UTC)
    clock.set(datetime(2026, 6, 1, 19, 0, 1, tzinfo=UTC))
    assert scheduler.tick() == 1  # and resumes


def test_skip_drops_missed_ticks_but_not_a_late_loop(scheduler, clock):
    clock.set(datetime(2026, 6, 1, 8, 30, tzinfo=UTC))
    schedule_id = create(scheduler, "0 * * * *", catch_up="skip")
    clock.set(datetime(2026, 6, 1, 18, 40, tzinfo=UTC))
    assert scheduler.tick() == 0
    assert scheduler.retrieve("dev", schedule_id).next_run == datetime(2026, 6, 1, 19, tzinfo=UTC)
    clock.set(datetime(2026, 6, 1, 19, 0, 20, tzinfo=UTC))  # 20 s late: still on time
    assert scheduler.tick() == 1
    assert [r.payload["timestamp"] for r in runs_of(scheduler, schedule_id)] == ["2026-06-01T19:00:00+00:00"]


# --- managing schedules ----------------------------------------------------------------------------


def test_a_second_create_with_the_same_deduplication_key_updates(scheduler):
    first = scheduler.create("dev", ScheduleCreate(task="work", cron="*/15 * * * *", external_id="tenant_42",
                                                   deduplication_key="tenant_42-sync"))
    again = scheduler.create("dev", ScheduleCreate(task="other", cron="0 * * * *", timezone="Asia/Tokyo",
                                                   external_id="tenant_42", deduplication_key="tenant_42-sync"))
    assert again.id == first.id
    assert (again.task, again.cron, again.timezone) == ("other", "0 * * * *", "Asia/Tokyo")
    assert [s.id for s in scheduler.list("dev", external_id="tenant_42").data] == [first.id]
    other = scheduler.create("dev", ScheduleCreate(task="work", cron="0 * * * *", deduplication_key="tenant_43"))
    assert other.id != first.id


def test_list_filters_and_pages(scheduler, clock):
    ids = []
    for i in range(5):
        clock.advance(1)  # ids sort by creation time
        ids.append(create(scheduler, "0 * * * *", external_id=f"t{i % 2}"))
    create(scheduler, "0 * * * *", task="other")
    assert {s.id for s in scheduler.list("dev", task="work").data} == set(ids)
    assert {s.id for s in scheduler.list("dev", external_id="t1").data} == set(ids[1::2])
    page = scheduler.list("dev", task="work", limit=3)
    rest = scheduler.list("dev", task="work", limit=3, cursor=page.next_cursor)
    assert [s.id for s in page.data + rest.data] == ids[::-1] and rest.next_cursor is None


@pytest.mark.parametrize(("cron", "field", "words"), [
    ("61 * * * *", "cron", "minute field '61'"),
    ("0 25 * * *", "cron", "hour field '25'"),
    ("0 0 32 * *", "cron", "day-of-month field '32'"),
    ("0 0 * 13 *", "cron", "month field '13'"),
    ("0 0 * * mon-xyz", "cron", "day-of-week field 'mon-xyz'"),
    ("* * * * * 75", "cron", "second field '75'"),
    ("every day", "cron", "2 fields"),
    ("0 0 30 2 *", "cron", "never fires"),
])
def test_an_invalid_expression_names_the_bad_part(cron, field, words):
    with pytest.raises(InvalidSchedule) as caught:
        check(cron, "UTC", 0)
    assert caught.value.field == field and words in caught.value.message


def test_a_schedule_for_an_unknown_task_is_refused(scheduler):
    with pytest.raises(UnknownTask) as caught:
        create(scheduler, "0 * * * *", task="nope")
    assert caught.value.field == "task"


def test_deactivate_and_delete_stop_future_ticks(scheduler, clock):
    paused = create(scheduler, "0 * * * *")
    deleted = create(scheduler, "0 * * * *")
    assert scheduler.set_active("dev", paused, False).next_run is None
    scheduler.delete("dev", deleted)
    clock.advance(3 * 3600)
    assert scheduler.tick() == 0
    schedule = scheduler.set_active("dev", paused, True)
    assert schedule.active and schedule.next_run > datetime.fromtimestamp(clock(), UTC)
    assert scheduler.tick() == 0  # no catch-up of the paused hours
    clock.advance(3600)
    assert scheduler.tick() == 1
    assert len(runs_of(scheduler, paused)) == 1 and runs_of(scheduler, deleted) == []


def test_an_update_of_the_expression_moves_the_next_tick(scheduler, clock):
    clock.set(datetime(2026, 6, 1, 8, 30, tzinfo=UTC))
    schedule_id = create(scheduler, "0 * * * *")
    updated = scheduler.update("dev", schedule_id, ScheduleUpdate(cron="45 8 * * *", timezone="UTC"))
    assert updated.next_run == datetime(2026, 6, 1, 8, 45, tzinfo=UTC)
    assert updated.upcoming[:2] == [datetime(2026, 6, 1, 8, 45, tzinfo=UTC), datetime(2026, 6, 2, 8, 45, tzinfo=UTC)]


def test_the_due_scan_uses_the_next_fire_time_index(scheduler):
    for _ in range(50):
        create(scheduler, "0 * * * *")
    query = "SELECT id FROM schedules WHERE next_run_at <= 1 ORDER BY next_run_at LIMIT 500"
    with scheduler.db.connect() as c:
        if scheduler.db.is_sqlite:
            plan = " ".join(str(row) for row in c.execute(sa.text("EXPLAIN QUERY PLAN " + query)))
        else:
            c.execute(sa.text("SET enable_seqscan = off"))  # a 50-row table: make the planner show its option
            plan = " ".join(str(row) for row in c.execute(sa.text("EXPLAIN " + query)))
    assert "ix_schedules_due" in plan


# --- declarative schedules ----------------------------------------------------------------------


def nightly(cron: str = "0 3 * * *", timezone: str = "Europe/Paris") -> TaskManifest:
    return TaskManifest(id="nightly", schedule=ScheduleSpec(cron=cron, timezone=timezone))


def test_a_declarative_schedule_follows_the_registered_code(scheduler, clock):
    engine = scheduler.engine
    clock.set(datetime(2026, 6, 1, 12, tzinfo=UTC))
    engine.register_tasks(["dev"], "v1", [TaskManifest(id="work"), nightly()])
    [declared] = scheduler.list("dev", type=ScheduleType.DECLARATIVE).data
    assert (declared.task, declared.cron, declared.timezone) == ("nightly", "0 3 * * *", "Europe/Paris")
    assert declared.next_run == datetime(2026, 6, 2, 1, tzinfo=UTC)  # 03:00 in Paris, summer time

    engine.register_tasks(["dev"], "v2", [TaskManifest(id="work"), nightly("0 4 * * *")])  # a redeploy
    [redeployed] = scheduler.list("dev", type=ScheduleType.DECLARATIVE).data
    assert redeployed.id == declared.id and redeployed.cron == "0 4 * * *"
    clock.set(datetime(2026, 6, 2, 2, 0, 5, tzinfo=UTC))
    assert scheduler.tick() == 1
    [run] = runs_of(scheduler, declared.id)
    assert run.version == "v2" and run.task == "nightly" and run.payload["type"] == "DECLARATIVE"

    with pytest.raises(Conflict):
        scheduler.update("dev", declared.id, ScheduleUpdate(cron="0 5 * * *"))
    with pytest.raises(Conflict):
        scheduler.delete("dev", declared.id)

    engine.register_tasks(["dev"], "v3", [TaskManifest(id="work")])  # the schedule was removed from the code
    assert scheduler.list("dev", type=ScheduleType.DECLARATIVE).data == []
    clock.advance(7 * 86400)
    assert scheduler.tick() == 0


def test_a_deactivated_declarative_schedule_stays_inactive_across_deploys(scheduler):
    scheduler.engine.register_tasks(["dev"], "v1", [nightly()])
    [declared] = scheduler.list("dev").data
    scheduler.set_active("dev", declared.id, False)
    scheduler.engine.register_tasks(["dev"], "v2", [nightly("0 4 * * *")])
    schedule = scheduler.retrieve("dev", declared.id)
    assert not schedule.active and schedule.next_run is None and schedule.cron == "0 4 * * *"


def test_catch_up_policy_is_part_of_a_declared_schedule(scheduler):
    manifest = TaskManifest(id="nightly", schedule=ScheduleSpec(cron="0 3 * * *", catch_up=CatchUp.SKIP))
    scheduler.engine.register_tasks(["dev"], "v1", [manifest])
    assert scheduler.list("dev").data[0].catch_up is CatchUp.SKIP
