"""Following and managing runs: retrieve, list, poll, cancel, replay, reschedule; SDK, HTTP and CLI.

Most tests share one runtime per store (`client` below) and keep to their own tags and queues.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from outlast import Client, ConflictError, NotFoundError, RunStatus, runs, tasks
from tests.conftest import SECRET_KEY, wait_for
from tests.e2e._shared import shared_runtime_fixture

shared_runtime = shared_runtime_fixture()
CLOSED = {"name": "closed", "concurrency_limit": 0}  # never claimed: its runs stay QUEUED


@pytest.fixture
def client(shared_runtime) -> Client:
    return shared_runtime.client()


@pytest.fixture
def http(shared_runtime) -> httpx.Client:
    with httpx.Client(base_url=shared_runtime.url + "/api/v1", timeout=30,
                      headers={"Authorization": f"Bearer {SECRET_KEY}"}) as http:
        yield http


def _ids(page) -> list[str]:
    return [run.id for run in page.data]


def test_retrieve_and_poll(client):
    handle = tasks.trigger("echo", {"hello": "world"}, client=client, tags=["poll"])
    run = runs.retrieve(handle.id, client=client)
    assert run.id == handle.id and run.task == "echo" and run.env == "dev"
    assert run.payload == {"hello": "world"}
    assert run.created_at <= datetime.now(UTC)

    done = runs.poll(handle.id, interval=0.1, timeout=30, client=client)
    assert done.status is RunStatus.COMPLETED
    assert done.output["payload"] == {"hello": "world"}
    assert done.attempts == 1
    assert done.started_at is not None and done.completed_at >= done.started_at
    events = runs.events(handle.id, client=client)
    statuses = [e.data.get("status") for e in events if e.kind == "status"]
    assert statuses == ["QUEUED", "EXECUTING", "COMPLETED"]

    stuck = tasks.trigger("echo", None, client=client, queue=CLOSED)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=stuck.id):
        runs.poll(stuck.id, interval=0.1, timeout=0.5, client=client)
    assert time.monotonic() - started < 5
    client.cancel_run(stuck.id)


def test_list_filters_by_status_task_and_tag(client):
    red = [tasks.trigger("echo", i, client=client, tags=["flt-red"]) for i in range(2)]
    blue = tasks.trigger("noop", None, client=client, tags=["flt-blue"])
    both = tasks.trigger("echo", "queued", client=client, tags=["flt-red", "flt-blue"], queue=CLOSED)
    for handle in [*red, blue]:
        client.poll(handle.id, interval=0.1, timeout=30)

    assert set(_ids(client.list_runs(tag="flt-red"))) == {red[0].id, red[1].id, both.id}
    assert set(_ids(client.list_runs(tag=["flt-red", "flt-blue"]))) == {red[0].id, red[1].id, blue.id, both.id}
    assert _ids(client.list_runs(tag="flt-blue", task="noop")) == [blue.id]
    assert _ids(client.list_runs(tag="flt-red", status="QUEUED")) == [both.id]
    assert set(_ids(client.list_runs(tag="flt-red", status=RunStatus.COMPLETED))) == {red[0].id, red[1].id}
    assert set(_ids(client.list_runs(tag=["flt-red", "flt-blue"], status=["queued", "COMPLETED"],
                                     task=["echo"]))) == {red[0].id, red[1].id, both.id}
    assert _ids(client.list_runs(tag="flt-red", status="FAILED")) == []
    assert _ids(client.list_runs(tag="flt-none")) == []
    client.cancel_run(both.id)
    assert _ids(client.list_runs(tag="flt-red", status="CANCELED")) == [both.id]


def test_list_filters_by_time_range(client):
    early = tasks.trigger("noop", None, client=client, tags=["window"], queue=CLOSED)
    time.sleep(0.05)
    middle = datetime.now(UTC)
    time.sleep(0.05)
    late = tasks.trigger("noop", None, client=client, tags=["window"], queue=CLOSED)
    time.sleep(0.05)
    end = datetime.now(UTC)

    assert _ids(client.list_runs(tag="window", created_after=middle)) == [late.id]
    assert _ids(client.list_runs(tag="window", created_before=middle)) == [early.id]
    assert _ids(client.list_runs(tag="window", created_after=middle, created_before=end)) == [late.id]
    assert _ids(client.list_runs(tag="window", created_after=end)) == []
    # Time zones are honoured: the same instant in another offset selects the same runs.
    eastern = middle.astimezone(timezone(timedelta(hours=-5)))
    assert _ids(client.list_runs(tag="window", created_after=eastern)) == [late.id]


def test_list_is_newest_first_with_cursor_pagination(client):
    handles = [tasks.trigger("noop", i, client=client, tags=["paged"], queue=CLOSED) for i in range(7)]
    newest_first = [h.id for h in reversed(handles)]

    first = client.list_runs(tag="paged", limit=3)
    assert _ids(first) == newest_first[:3] and first.next_cursor
    second = client.list_runs(tag="paged", limit=3, cursor=first.next_cursor)
    assert _ids(second) == newest_first[3:6] and second.next_cursor
    third = client.list_runs(tag="paged", limit=3, cursor=second.next_cursor)
    assert _ids(third) == newest_first[6:] and third.next_cursor is None

    exact = client.list_runs(tag="paged", limit=7)
    assert _ids(exact) == newest_first and exact.next_cursor is None
    assert [r.id for r in client.iter_runs(tag="paged", limit=2)] == newest_first
    assert [r.id for r in runs.iter(tag="paged", limit=4, client=client)] == newest_first


def test_cancel(client, shared_runtime):
    queued = tasks.trigger("echo", None, client=client, queue=CLOSED)
    run = runs.cancel(queued.id, client=client)
    assert run.status is RunStatus.CANCELED and run.completed_at is not None
    assert client.cancel_run(queued.id).status is RunStatus.CANCELED  # cancelling again changes nothing

    delayed = tasks.trigger("echo", None, client=client, delay=0.5)
    assert client.cancel_run(delayed.id).status is RunStatus.CANCELED

    executing = tasks.trigger("sleeper", {"seconds": 30}, client=client)
    wait_for(lambda: client.retrieve_run(executing.id).status is RunStatus.EXECUTING, message="sleeper to start")
    run = client.cancel_run(executing.id)
    assert run.status is RunStatus.CANCELED
    # The attempt is stopped: the task's `finally` runs, and no late result revives the run.
    marks = shared_runtime.scratch / f"sleeper-{executing.id}"
    wait_for(lambda: marks.exists() and "cleanup" in marks.read_text(), timeout=15, message="sleeper to stop")

    done = tasks.trigger("echo", None, client=client)
    client.poll(done.id, interval=0.1, timeout=30)
    assert client.cancel_run(done.id).status is RunStatus.COMPLETED  # a finished run stays as it is

    time.sleep(0.75)  # the delay has passed, and the stopped attempt has reported
    for handle in (queued, delayed, executing):
        run = client.retrieve_run(handle.id)
        assert run.status is RunStatus.CANCELED, handle
        assert run.output is None
    assert client.retrieve_run(delayed.id).started_at is None
    assert client.retrieve_run(queued.id).started_at is None


def test_replay(client):
    original = tasks.trigger("echo", {"again": True}, client=client, tags=["replayed"], idempotency_key="once",
                             priority=3)
    client.poll(original.id, interval=0.1, timeout=30)
    replay = runs.replay(original.id, client=client)
    assert replay.id != original.id and replay.task == "echo" and not replay.is_cached
    run = client.poll(replay.id, interval=0.1, timeout=30)
    assert run.status is RunStatus.COMPLETED
    assert run.replayed_from == original.id
    assert run.payload == {"again": True}
    assert run.output["payload"] == {"again": True}
    assert run.tags == ["replayed"] and run.priority == 3
    assert run.idempotency_key is None
    # The replayed run is untouched, and can be replayed again.
    assert client.retrieve_run(original.id).replayed_from is None
    assert client.replay_run(original.id).id not in {original.id, replay.id}

    failed = tasks.trigger("always-fails", None, client=client)
    assert client.poll(failed.id, interval=0.1, timeout=30).status is RunStatus.FAILED
    # A replay is a new run with attempts of its own.
    retried = client.poll(client.replay_run(failed.id).id, interval=0.1, timeout=30)
    assert retried.status is RunStatus.FAILED and retried.attempts == 2
    assert client.retrieve_run(failed.id).attempts == 2


def test_reschedule(client):
    handle = tasks.trigger("echo", "moved", client=client, delay="1h")
    original = client.retrieve_run(handle.id)
    assert original.status is RunStatus.DELAYED

    run = runs.reschedule(handle.id, "2h", client=client)
    assert run.status is RunStatus.DELAYED
    assert run.delay_until - original.delay_until >= timedelta(minutes=59)

    at = datetime.now(UTC) + timedelta(seconds=0.5)
    run = client.reschedule_run(handle.id, at)
    assert abs(run.delay_until - at) < timedelta(milliseconds=5)
    run = client.poll(handle.id, interval=0.1, timeout=30)
    assert run.status is RunStatus.COMPLETED
    assert run.started_at >= at - timedelta(milliseconds=5)

    with pytest.raises(ConflictError, match="DELAYED") as raised:
        client.reschedule_run(handle.id, 10)
    assert raised.value.status_code == 409
    with pytest.raises(NotFoundError):
        client.reschedule_run("run_does_not_exist", 10)

    # Rescheduling to now starts the run at once.
    soon = tasks.trigger("echo", "now", client=client, delay="1h")
    client.reschedule_run(soon.id, 0)
    assert client.poll(soon.id, interval=0.1, timeout=10).status is RunStatus.COMPLETED


def test_runs_over_http(http):
    response = http.post("/tasks/echo/trigger", json={"payload": {"via": "http"}, "options": {"tags": ["http"]}})
    assert response.status_code == 200
    handle = response.json()
    assert handle["task"] == "echo" and handle["is_cached"] is False
    run_id = handle["id"]

    run = wait_for(lambda: (r := http.get(f"/runs/{run_id}").json())["status"] == "COMPLETED" and r,
                   message="the run to complete")
    assert run["payload"] == {"via": "http"} and run["output"]["payload"] == {"via": "http"}

    listed = http.get("/runs", params=[("tag", "http"), ("status", "COMPLETED"), ("limit", 10)])
    assert listed.status_code == 200
    assert [r["id"] for r in listed.json()["data"]] == [run_id]
    assert listed.json()["next_cursor"] is None

    events = http.get(f"/runs/{run_id}/events")
    assert events.status_code == 200 and events.json()[0]["kind"] == "status"

    replay = http.post(f"/runs/{run_id}/replay")
    assert replay.status_code == 200 and replay.json()["id"] != run_id

    delayed = http.post("/tasks/echo/trigger", json={"payload": 1, "options": {"delay": "1h"}}).json()["id"]
    moved = http.post(f"/runs/{delayed}/reschedule", json={"delay": "2h"})
    assert moved.status_code == 200 and moved.json()["status"] == "DELAYED"
    canceled = http.post(f"/runs/{delayed}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "CANCELED"
    conflict = http.post(f"/runs/{delayed}/reschedule", json={"delay": 1})
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "conflict" and conflict.json()["field"] == "run_id"

    for method, path in [("GET", "/runs/run_missing"), ("GET", "/runs/run_missing/events"),
                         ("POST", "/runs/run_missing/cancel"), ("POST", "/runs/run_missing/replay")]:
        missing = http.request(method, path)
        assert missing.status_code == 404, path
        assert missing.json() == {"error": "run_not_found", "message": "run 'run_missing' not found",
                                  "field": "run_id"}


def _cli(runtime, *args: str, key: str = SECRET_KEY) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUTLAST_API_URL": runtime.url, "OUTLAST_SECRET_KEY": key, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "outlast.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_cli(shared_runtime, client):
    done = _cli(shared_runtime, "trigger", "echo", "--payload", '{"from": "cli"}', "--tag", "cli", "--wait")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[0]
    assert run_id.startswith("run_") and "COMPLETED" in done.stdout
    assert client.retrieve_run(run_id).output["payload"] == {"from": "cli"}

    shown = _cli(shared_runtime, "runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    shown = json.loads(shown.stdout)
    assert shown["run"]["id"] == run_id and shown["run"]["tags"] == ["cli"]
    assert shown["events"][-1]["data"]["status"] == "COMPLETED"

    # The CLI triggers into the closed queue this runtime knows from the SDK trigger below.
    tasks.trigger("noop", None, client=client, queue=CLOSED)
    queued = _cli(shared_runtime, "trigger", "noop", "--queue", "closed", "--tag", "cli", "--idempotency-key", "k1")
    assert queued.returncode == 0, queued.stderr
    queued_id = queued.stdout.strip()
    cached = _cli(shared_runtime, "trigger", "noop", "--idempotency-key", "k1")
    assert cached.stdout.strip() == queued_id and "existing run" in cached.stderr

    listed = _cli(shared_runtime, "runs", "ls", "--tag", "cli", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)["data"]] == [queued_id, run_id]
    only_queued = json.loads(_cli(shared_runtime, "runs", "ls", "--tag", "cli", "--status", "QUEUED", "--json").stdout)
    assert [r["id"] for r in only_queued["data"]] == [queued_id]
    table = _cli(shared_runtime, "runs", "ls", "--tag", "cli")
    assert table.returncode == 0 and run_id in table.stdout and queued_id in table.stdout

    canceled = _cli(shared_runtime, "runs", "cancel", queued_id)
    assert canceled.returncode == 0, canceled.stderr
    assert "CANCELED" in canceled.stdout
    assert client.retrieve_run(queued_id).status is RunStatus.CANCELED

    replayed = _cli(shared_runtime, "runs", "replay", run_id)
    assert replayed.returncode == 0, replayed.stderr
    new_id = replayed.stdout.strip()
    assert client.poll(new_id, interval=0.1, timeout=30).replayed_from == run_id

    unknown = _cli(shared_runtime, "trigger", "no-such-task")
    assert unknown.returncode == 1 and "no-such-task" in unknown.stderr
    bad_json = _cli(shared_runtime, "trigger", "echo", "--payload", "{nope")
    assert bad_json.returncode == 2 and "--payload" in bad_json.stderr
    missing = _cli(shared_runtime, "runs", "show", "run_missing")
    assert missing.returncode == 1 and "run_missing" in missing.stderr
    bad_key = _cli(shared_runtime, "runs", "ls", key="ol_dev_wrong_key_000000000")
    assert bad_key.returncode == 1 and "invalid secret key" in bad_key.stderr
