"""Schedules end to end: a real runtime fires them; managed through the SDK, the HTTP API and the CLI.

The project (`tests/projects/scheduled`) declares `heartbeat`, every second; the tests create
their own imperative schedules of `tenant-sync`, also every second (croniter's seconds field), and
keep apart by their external ids.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from typer.testing import CliRunner

from outlast import AsyncClient, Client, ConflictError, InvalidRequestError, NotFoundError, RunStatus, schedules
from outlast.cli import app as cli
from tests.conftest import (
    PG_ADMIN_URL,
    PROJECTS,
    SECRET_KEY,
    _create_pg_database,
    _drop_pg_database,
    runtime_process,
    wait_for,
)
from tests.e2e._shared import shared_runtime_fixture

shared_runtime = shared_runtime_fixture(project="scheduled")
EVERY_SECOND = "* * * * * *"


@pytest.fixture
def client(shared_runtime) -> Client:
    return shared_runtime.client()


def runs_of(client: Client, schedule_id: str, status: RunStatus | None = None) -> list:
    return client.list_runs(tag=schedules.schedule_tag(schedule_id), status=status, limit=500).data


def wait_runs(client: Client, schedule_id: str, count: int, status: RunStatus | None = None) -> list:
    return wait_for(lambda: (found := runs_of(client, schedule_id, status)) and len(found) >= count and found,
                    timeout=60, message=f"{count} runs of {schedule_id}")


def test_a_declared_schedule_exists_once_the_code_is_registered_and_fires(client):
    [declared] = schedules.list(type="DECLARATIVE", client=client).data
    assert (declared.task, declared.cron, declared.timezone) == ("heartbeat", EVERY_SECOND, "Europe/Paris")
    assert declared.active and len(declared.upcoming) == 5
    run = wait_runs(client, declared.id, 1, RunStatus.COMPLETED)[0]
    # The task got the payload parsed as a ScheduledPayload; its tick is a whole second in the past of the run.
    assert run.output["schedule_id"] == declared.id and run.output["type"] == "DECLARATIVE"
    assert run.output["timezone"] == "Europe/Paris" and run.output["upcoming"] == 5
    tick = datetime.fromisoformat(run.payload["timestamp"])
    assert tick.microsecond == 0 and tick <= run.created_at
    with pytest.raises(ConflictError):
        schedules.delete(declared.id, client=client)


def test_an_imperative_schedule_fires_each_tick_once_with_its_payload(client):
    schedule = schedules.create("tenant-sync", EVERY_SECOND, timezone="America/New_York",
                                external_id="tenant-fires", client=client)
    runs = wait_runs(client, schedule.id, 3, RunStatus.COMPLETED)
    stamps = [r.payload["timestamp"] for r in runs]
    assert len(stamps) == len(set(stamps))
    newest = max(runs, key=lambda r: r.payload["timestamp"])
    payload = newest.payload
    assert payload["schedule_id"] == schedule.id and payload["external_id"] == "tenant-fires"
    assert payload["timezone"] == "America/New_York" and payload["type"] == "IMPERATIVE"
    assert payload["last_timestamp"] is not None and payload["last_timestamp"] < payload["timestamp"]
    assert len(payload["upcoming"]) == 5 and payload["upcoming"][0] > payload["timestamp"]
    assert newest.output == {"tenant": "tenant-fires", "tick": payload["timestamp"]}
    schedules.delete(schedule.id, client=client)


def test_deactivate_and_delete_stop_future_ticks(client):
    paused = schedules.create("tenant-sync", EVERY_SECOND, external_id="tenant-paused", client=client)
    deleted = schedules.create("tenant-sync", EVERY_SECOND, external_id="tenant-deleted", client=client)
    wait_runs(client, paused.id, 1)
    wait_runs(client, deleted.id, 1)
    assert schedules.deactivate(paused.id, client=client).next_run is None
    schedules.delete(deleted.id, client=client)
    stopped = {s: len(runs_of(client, s)) for s in (paused.id, deleted.id)}
    # A tick already being fired when they stopped may still land. Then watch a live schedule fire
    # twice more (two whole loops of the scheduler): the stopped ones must not move at all meanwhile.
    probe = schedules.create("tenant-sync", EVERY_SECOND, external_id="tenant-probe", client=client)
    wait_runs(client, probe.id, 2)
    settled = {s: len(runs_of(client, s)) for s in stopped}
    assert all(settled[s] <= stopped[s] + 1 for s in stopped)
    seen = len(runs_of(client, probe.id))
    wait_runs(client, probe.id, seen + 2)
    assert {s: len(runs_of(client, s)) for s in stopped} == settled
    with pytest.raises(NotFoundError):
        schedules.retrieve(deleted.id, client=client)
    resumed = schedules.activate(paused.id, client=client)
    assert resumed.active and resumed.next_run is not None
    wait_runs(client, paused.id, settled[paused.id] + 1)
    for schedule_id in (paused.id, probe.id):
        schedules.delete(schedule_id, client=client)


def test_create_with_a_deduplication_key_updates_and_the_async_twins(shared_runtime):
    async def main() -> None:
        async with AsyncClient(api_url=shared_runtime.url, secret_key=SECRET_KEY, timeout=30) as aclient:
            first = await schedules.acreate("tenant-sync", "*/15 * * * *", external_id="tenant_42",
                                            deduplication_key="tenant_42-sync", client=aclient)
            again = await schedules.acreate("tenant-sync", "0 * * * *", timezone="Asia/Tokyo",
                                            external_id="tenant_42", deduplication_key="tenant_42-sync",
                                            client=aclient)
            assert again.id == first.id and (again.cron, again.timezone) == ("0 * * * *", "Asia/Tokyo")
            listed = await schedules.alist(external_id="tenant_42", client=aclient)
            assert [s.id for s in listed.data] == [first.id]
            updated = await schedules.aupdate(first.id, cron="30 9 * * 1-5", client=aclient)
            assert updated.cron == "30 9 * * 1-5"
            tokyo = [t.astimezone(ZoneInfo("Asia/Tokyo")) for t in updated.upcoming]
            assert all((t.weekday(), t.hour, t.minute) < (5, 9, 31) and (t.hour, t.minute) == (9, 30) for t in tokyo)
            assert not (await schedules.adeactivate(first.id, client=aclient)).active
            assert (await schedules.aactivate(first.id, client=aclient)).active
            assert (await schedules.aretrieve(first.id, client=aclient)).cron == "30 9 * * 1-5"
            await schedules.adelete(first.id, client=aclient)
            with pytest.raises(NotFoundError):
                await schedules.aretrieve(first.id, client=aclient)

    asyncio.run(main())


def test_list_by_task_and_pages(client):
    made = [schedules.create("tenant-sync", "0 0 1 1 *", external_id=f"tenant-page-{i}", client=client).id
            for i in range(3)]
    ours = [s.id for s in schedules.list(task="tenant-sync", limit=500, client=client).data if s.id in made]
    assert ours == made[::-1]
    first = schedules.list(task="tenant-sync", limit=1, client=client)
    assert len(first.data) == 1 and first.next_cursor
    for schedule_id in made:
        schedules.delete(schedule_id, client=client)


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"cron": "61 * * * *"}, "cron", "minute field '61'"),
    ({"cron": "0 0 * * funday"}, "cron", "day-of-week field 'funday'"),
    ({"cron": "0 0 31 2 *"}, "cron", "never fires"),
    ({"cron": "daily"}, "cron", "1 fields"),
    ({"cron": "0 3 * * *", "timezone": "Europe/Pariss"}, "timezone", "unknown time zone 'Europe/Pariss'"),
    ({"cron": "0 3 * * *", "catch_up": "all"}, "catch_up", "last"),
    ({"cron": "0 3 * * *", "task": "no-such-task"}, "task", "not registered"),
])
def test_bad_input_is_refused_naming_the_part(shared_runtime, body, field, words):
    request = {"task": "tenant-sync", **body}
    response = httpx.post(f"{shared_runtime.url}/api/v1/schedules", json=request,
                          headers={"Authorization": f"Bearer {SECRET_KEY}"})
    assert response.status_code == (404 if field == "task" else 422), response.text
    error = response.json()
    assert error["field"] == field and words in error["message"], error


def test_the_sdk_raises_a_catchable_error_naming_the_field(client):
    with pytest.raises(InvalidRequestError) as caught:
        schedules.create("tenant-sync", "0 24 * * *", client=client)
    assert caught.value.field == "cron" and "hour field '24'" in str(caught.value)
    with pytest.raises(InvalidRequestError) as caught:
        schedules.update("sched_x", timezone="Moon/Base", client=client)  # refused before any request
    assert caught.value.field == "timezone"
    with pytest.raises(NotFoundError):
        schedules.activate("sched_missing", client=client)


def test_the_cli_creates_shows_upcoming_ticks_in_the_zone_and_deletes(shared_runtime):
    runner = CliRunner()
    env = {"OUTLAST_API_URL": shared_runtime.url, "OUTLAST_SECRET_KEY": SECRET_KEY}
    created = runner.invoke(cli, ["schedules", "create", "tenant-sync", "--cron", "0 9 * * *", "--tz", "Asia/Tokyo",
                                  "--external-id", "tenant-cli", "--json"], env=env)
    assert created.exit_code == 0, created.output
    schedule_id = json.loads(created.output)["id"]

    shown = runner.invoke(cli, ["schedules", "show", schedule_id], env=env)
    assert shown.exit_code == 0, shown.output
    assert "upcoming ticks (Asia/Tokyo)" in shown.output
    ticks = [line.strip() for line in shown.output.splitlines() if line.strip().endswith(" JST")]
    assert len(ticks) == 5 and all(t.endswith("09:00:00 JST") for t in ticks), shown.output

    listed = runner.invoke(cli, ["schedules", "ls", "--external-id", "tenant-cli"], env=env)
    assert listed.exit_code == 0 and schedule_id in listed.output
    paused = runner.invoke(cli, ["schedules", "deactivate", schedule_id], env=env)
    assert paused.exit_code == 0 and f"{schedule_id} inactive" in paused.output
    bad = runner.invoke(cli, ["schedules", "update", schedule_id, "--cron", "0 9 * * * * * *"], env=env)
    assert bad.exit_code == 1 and "8 fields" in bad.output
    deleted = runner.invoke(cli, ["schedules", "delete", schedule_id], env=env)
    assert deleted.exit_code == 0 and f"{schedule_id} deleted" in deleted.output
    missing = runner.invoke(cli, ["schedules", "show", schedule_id], env=env)
    assert missing.exit_code == 1 and "not found" in missing.output


# --- restarts and replicas ------------------------------------------------------------------------


def test_a_restarted_runtime_does_not_flood_with_missed_ticks(make_runtime):
    runtime = make_runtime(project="scheduled")
    client = runtime.client()
    schedule = schedules.create("tenant-sync", EVERY_SECOND, external_id="tenant-restart", client=client)
    wait_runs(client, schedule.id, 2)
    runtime.stop()
    stopped_at = time.time()
    time.sleep(3)  # downtime across three ticks
    restarted_at = time.time()
    runtime.start()
    client = runtime.client()
    before = len(runs_of(client, schedule.id))
    wait_runs(client, schedule.id, before + 2)
    stamps = sorted(datetime.fromisoformat(r.payload["timestamp"]).timestamp() for r in runs_of(client, schedule.id))
    assert len(stamps) == len(set(stamps))
    # Ticks wholly inside the downtime were not fired one by one: at most the last of them.
    missed = [t for t in stamps if stopped_at + 1 < t < restarted_at - 1]
    assert len(missed) <= 1, missed


@pytest.fixture
def shared_database() -> Iterator[str]:
    name = _create_pg_database()
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    _drop_pg_database(name)


def test_two_runtimes_on_one_postgresql_never_double_fire(tmp_path, shared_database):
    replicas = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        replicas.append(runtime_process(tmp_path / name, shared_database, project="scheduled", node_id=f"node-{name}"))
    try:
        for replica in replicas:
            replica.start()
        client = replicas[0].client()
        created = [schedules.create("tenant-sync", EVERY_SECOND, external_id=f"tenant-replica-{i}", client=client)
                   for i in range(5)]
        [declared] = schedules.list(type="DECLARATIVE", client=client).data
        for schedule in [*created, declared]:
            wait_runs(client, schedule.id, 8)
            counts = Counter(r.payload["timestamp"] for r in runs_of(client, schedule.id))
            assert max(counts.values()) == 1, [t for t, n in counts.items() if n > 1]
        # Both replicas' schedulers were live all along: each answers for the same schedules.
        other = replicas[1].client()
        assert {s.id for s in schedules.list(client=other, limit=500).data} >= {s.id for s in created}
    finally:
        for replica in replicas:
            replica.close()


def test_the_http_api_lists_the_schedule_and_its_runs(shared_runtime, client):
    schedule = schedules.create("tenant-sync", EVERY_SECOND, external_id="tenant-http", client=client)
    wait_runs(client, schedule.id, 1)
    headers = {"Authorization": f"Bearer {SECRET_KEY}"}
    body = httpx.get(f"{shared_runtime.url}/api/v1/schedules/{schedule.id}", headers=headers).json()
    assert body["id"] == schedule.id and body["external_id"] == "tenant-http" and len(body["upcoming"]) == 5
    runs = httpx.get(f"{shared_runtime.url}/api/v1/runs", params={"tag": f"schedule:{schedule.id}"},
                     headers=headers).json()["data"]
    assert runs and all(r["payload"]["schedule_id"] == schedule.id for r in runs)
    upcoming = [datetime.fromisoformat(t).timestamp() for t in body["upcoming"]]
    assert [b - a for a, b in itertools.pairwise(upcoming)] == [1.0] * 4  # every second
    patched = httpx.patch(f"{shared_runtime.url}/api/v1/schedules/{schedule.id}", json={"cron": "0 0 * * *"},
                          headers=headers)
    assert patched.status_code == 200 and patched.json()["cron"] == "0 0 * * *"
    assert httpx.delete(f"{shared_runtime.url}/api/v1/schedules/{schedule.id}", headers=headers).status_code == 200


def test_a_declared_schedule_follows_redeploys_and_goes_with_its_code(tmp_path, store):
    project = tmp_path / "project"
    project.mkdir()
    source = (PROJECTS / "scheduled" / "tasks.py").read_text()
    (project / "tasks.py").write_text(source)
    (tmp_path / "rt").mkdir()
    runtime = runtime_process(tmp_path / "rt", store, project=None, extra_args=["--project", str(project)])
    try:
        client = runtime.start().client()
        [declared] = schedules.list(type="DECLARATIVE", client=client).data
        first_version = wait_runs(client, declared.id, 1)[0].version

        runtime.stop()  # a deploy: new code, same schedule id, the new expression, runs on the new version
        (project / "tasks.py").write_text(source.replace('cron="* * * * * *"', 'cron="* * * * * */2"'))
        client = runtime.start().client()
        [redeployed] = schedules.list(type="DECLARATIVE", client=client).data
        assert redeployed.id == declared.id and redeployed.cron == "* * * * * */2"
        assert {int(t.timestamp()) % 2 for t in redeployed.upcoming} == {0}
        newer = wait_for(lambda: [r for r in runs_of(client, declared.id) if r.version != first_version],
                         timeout=60, message="a run of the new version")
        assert all(datetime.fromisoformat(r.payload["timestamp"]).second % 2 == 0 for r in newer)

        runtime.stop()  # the schedule is gone from the code: it is gone from the runtime
        (project / "tasks.py").write_text(source.replace('@schedules.task(id="heartbeat", cron="* * * * * *", '
                                                         'timezone="Europe/Paris")', '@task(id="heartbeat")'))
        client = runtime.start().client()
        assert schedules.list(type="DECLARATIVE", client=client).data == []
    finally:
        runtime.close()
