"""Bulk cancel and replay through the SDK and API of a real runtime: 10,000 runs, a SIGKILL mid-way, a restart."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from outlast import InvalidRequestError, NotFoundError, RunStatus
from outlast.runtime.engine import RunEngine
from outlast.runtime.store.db import Database
from outlast.runtime.store.schema import run_events, runs
from outlast.wire import BatchItem, BulkActionState, TaskManifest, TriggerOptions
from tests.conftest import SECRET_KEY, wait_for
from tests.e2e._shared import prod_key

RUNS = 10_000


def store_url(runtime, store: str | None) -> str:
    return store or f"sqlite:///{runtime.args[runtime.args.index('--data-dir') + 1]}/outlast.db"


def fill(url: str, count: int, *, tag: str) -> None:
    """`count` queued runs of task `target` (tagged `tag`), inserted through the engine's batch path."""
    db = Database(url)
    try:
        engine = RunEngine(db)
        engine.register_tasks(["dev"], "v1", [TaskManifest(id="target"), TaskManifest(id="bystander")])
        for start in range(0, count, 1000):
            engine.trigger("dev", [BatchItem(task="target", payload={"n": n}, options=TriggerOptions(tags=[tag]))
                                   for n in range(start, min(count, start + 1000))])
        engine.trigger("dev", [BatchItem(task="bystander", options=TriggerOptions(tags=[tag]))])
    finally:
        db.dispose()


def status_events(url: str, status: str) -> dict[str, int]:
    db = Database(url)
    try:
        with db.connect() as c:
            joined = sa.select(run_events.c.run_id, sa.func.count()).join(runs, runs.c.id == run_events.c.run_id)
            rows = c.execute(joined.where(runs.c.task_id == "target", run_events.c.kind == "status",
                                          run_events.c.message == status).group_by(run_events.c.run_id)).all()
        return dict(rows)
    finally:
        db.dispose()


def replays(url: str) -> dict[str, int]:
    db = Database(url)
    try:
        with db.connect() as c:
            rows = c.execute(sa.select(runs.c.replayed_from, sa.func.count()).where(runs.c.replayed_from.is_not(None))
                             .group_by(runs.c.replayed_from)).all()
            originals = c.execute(sa.select(runs.c.id).where(runs.c.task_id == "target",
                                                             runs.c.replayed_from.is_(None))).scalars().all()
        return dict(rows), set(originals)
    finally:
        db.dispose()


def kill_mid_way(runtime, client, job_id: str) -> int:
    """SIGKILL the runtime once the job is past its first chunks and far from done; returns how far it got."""
    job = wait_for(lambda: (j := client.bulk.retrieve(job_id)).processed >= 1000 and j, timeout=300, interval=0.02,
                   message="the job's first chunks")
    runtime.kill()
    assert job.state is BulkActionState.RUNNING and job.processed < RUNS, job
    return job.processed


@pytest.fixture
def bulk_runtime(make_runtime):
    # Small chunks, so that the kill lands with most of the job still to do.
    return make_runtime(project=None, extra_env={"OUTLAST_BULK_CHUNK": "200"})


def test_bulk_cancel_of_10000_runs_survives_a_sigkill_and_cancels_each_once(bulk_runtime, store):
    url = store_url(bulk_runtime, store)
    fill(url, RUNS, tag="bulk")
    client = bulk_runtime.client()
    job = client.bulk.cancel(task="target", status="queued", tag="bulk")
    assert (job.total, job.action.value) == (RUNS, "cancel")
    kill_mid_way(bulk_runtime, client, job.id)
    bulk_runtime.start()
    client = bulk_runtime.client()
    job = client.bulk.poll(job.id, interval=0.2, timeout=600)
    assert (job.processed, job.succeeded, job.skipped) == (RUNS, RUNS, 0)
    cancelled = status_events(url, "canceled")
    assert len(cancelled) == RUNS and set(cancelled.values()) == {1}
    assert client.list_runs(task="target", status="QUEUED").data == []
    assert client.list_runs(task="bystander").data[0].status is RunStatus.QUEUED


def test_bulk_replay_of_10000_runs_survives_a_sigkill_and_replays_each_once(bulk_runtime, store):
    url = store_url(bulk_runtime, store)
    fill(url, RUNS, tag="bulk")
    client = bulk_runtime.client()
    job = client.bulk.replay({"task": ["target"]})
    kill_mid_way(bulk_runtime, client, job.id)
    bulk_runtime.start()
    job = bulk_runtime.client().bulk.poll(job.id, interval=0.2, timeout=600)
    assert (job.total, job.processed, job.succeeded) == (RUNS, RUNS, RUNS)
    counts, originals = replays(url)
    assert len(originals) == RUNS and set(counts) == originals and set(counts.values()) == {1}


def test_bulk_actions_are_scoped_to_the_callers_environment(bulk_runtime, store):
    fill(store_url(bulk_runtime, store), 3, tag="scoped")
    prod = bulk_runtime.client(prod_key(bulk_runtime))
    job = prod.bulk.cancel(task="target")
    assert (job.total, job.state) == (0, BulkActionState.COMPLETED)  # dev's runs are not prod's to cancel
    dev_job = bulk_runtime.client().bulk.cancel(tag="scoped")
    with pytest.raises(NotFoundError):
        prod.bulk.retrieve(dev_job.id)
    assert bulk_runtime.client().bulk.poll(dev_job.id, interval=0.1, timeout=60).succeeded == 4


BAD_REQUESTS = [
    ({"action": "delete", "filter": {"task": ["x"]}}, "action"),
    ({"action": "cancel", "filter": {}}, "filter"),
    ({"action": "cancel"}, "filter"),
    ({"action": "cancel", "filter": {"status": ["DONE"]}}, "filter.status.0"),
    ({"action": "cancel", "filter": {"task": [""]}}, "filter.task.0"),
    ({"action": "cancel", "filter": {"created_after": "9999-01-01T00:00:00Z"}}, "filter.created_after"),
    ({"action": "cancel", "filter": {"tag": ["t"], "colour": "red"}}, "filter.colour"),
]


def test_bad_bulk_requests_are_422_naming_the_field(bulk_runtime):
    headers = {"Authorization": f"Bearer {SECRET_KEY}"}
    for body, field in BAD_REQUESTS:
        response = httpx.post(f"{bulk_runtime.url}/api/v1/bulk-actions", json=body, timeout=10, headers=headers)
        assert response.status_code == 422, response.text
        assert response.json()["field"] == field
        if body.get("action") == "cancel" and "filter" in body:
            with pytest.raises(InvalidRequestError) as caught:
                bulk_runtime.client().bulk.cancel(body["filter"])
            assert caught.value.field == field
    assert httpx.get(f"{bulk_runtime.url}/api/v1/bulk-actions/bulk_nope", timeout=10,
                     headers=headers).status_code == 404


def test_cli_bulk_cancel_follows_the_job_to_its_end(bulk_runtime, store):
    import json
    import os
    import subprocess
    import sys

    fill(store_url(bulk_runtime, store), 5, tag="cli")
    env = {**os.environ, "OUTLAST_API_URL": bulk_runtime.url, "OUTLAST_SECRET_KEY": SECRET_KEY}
    done = subprocess.run([sys.executable, "-m", "outlast.cli", "bulk", "cancel", "--tag", "cli", "--task", "target",
                           "--wait", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert (job["state"], job["total"], job["succeeded"]) == ("COMPLETED", 5, 5)
    shown = subprocess.run([sys.executable, "-m", "outlast.cli", "bulk", "show", job["id"]], env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "5/5" in shown.stdout
    refused = subprocess.run([sys.executable, "-m", "outlast.cli", "bulk", "replay"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 1 and "give at least one of" in refused.stderr


def test_async_client_bulk_replay(bulk_runtime, store):
    import asyncio

    from outlast import AsyncClient

    fill(store_url(bulk_runtime, store), 3, tag="async")

    async def replay_all():
        async with AsyncClient(api_url=bulk_runtime.url, secret_key=SECRET_KEY) as client:
            job = await client.bulk.replay(tag="async", task="target")
            return await client.bulk.poll(job.id, interval=0.1, timeout=60)

    job = asyncio.run(replay_all())
    assert (job.state, job.total, job.succeeded) == (BulkActionState.COMPLETED, 3, 3)
