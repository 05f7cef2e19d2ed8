"""Triggering runs: the SDK's trigger calls, batches, and every trigger option, end to end.

Most tests share one runtime per store (`client` below); each keeps to its own tags, queues and
idempotency keys. Tests that restart the runtime or need other settings start their own.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from outlast import AsyncClient, Client, RunStatus, Task, tasks
from outlast.wire import API_PREFIX
from tests.conftest import SECRET_KEY, wait_for
from tests.e2e._shared import CountingTransport, shared_runtime_fixture

shared_runtime = shared_runtime_fixture()

# A queue no run of which is ever claimed: it keeps runs QUEUED for as long as a test needs.
CLOSED = {"name": "closed", "concurrency_limit": 0}


@pytest.fixture
def client(shared_runtime) -> Client:
    return shared_runtime.client()


def _echo_task() -> Task:
    # A `Task` object for the runtime's "echo" task, built without registering it in this process.
    return Task(lambda payload: payload, id="echo")


def test_trigger_by_task_object_and_by_id(client):
    handle = _echo_task().trigger({"n": 1}, client=client)
    assert handle.task == "echo" and not handle.is_cached
    run = client.poll(handle.id, interval=0.1, timeout=30)
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.output["payload"] == {"n": 1}
    assert run.output["run_id"] == handle.id

    handle = tasks.trigger("sync-echo", [1, "two"], client=client)
    run = client.poll(handle.id, interval=0.1, timeout=30)
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.output == {"payload": [1, "two"], "task": "sync-echo"}


def test_trigger_returns_before_the_run_finishes(client):
    started = time.monotonic()
    handle = tasks.trigger("sleeper", {"seconds": 30}, client=client)
    assert time.monotonic() - started < 5
    run = client.retrieve_run(handle.id)
    assert not run.is_final
    assert run.status in (RunStatus.QUEUED, RunStatus.EXECUTING)
    client.cancel_run(handle.id)


def test_async_twins(shared_runtime):
    async def main() -> list:
        async with AsyncClient(api_url=shared_runtime.url, secret_key=SECRET_KEY, timeout=30) as aclient:
            by_object = await _echo_task().atrigger("object", client=aclient, tags=["async"])
            by_id = await tasks.atrigger("echo", "by id", client=aclient)
            batch = await tasks.abatch_trigger("echo", ["b1", "b2"], client=aclient)
            handles = [by_object, by_id, *batch.runs]
            return [await aclient.poll(h.id, interval=0.1, timeout=30) for h in handles]

    runs = asyncio.run(main())
    assert [r.status for r in runs] == [RunStatus.COMPLETED] * 4
    assert [r.output["payload"] for r in runs] == ["object", "by id", "b1", "b2"]
    assert runs[0].tags == ["async"]


def test_batch_trigger_of_1000_items_is_one_request(shared_runtime, client):
    transport = CountingTransport()
    options = {"queue": CLOSED, "tags": ["batch-of-1000"]}
    with Client(api_url=shared_runtime.url, secret_key=SECRET_KEY, timeout=60, transport=transport) as counted:
        batch = tasks.batch_trigger("noop", [{"payload": i, "options": options} for i in range(1000)],
                                    client=counted)
    assert len(transport.requests) == 1
    assert len(batch.runs) == 1000
    assert len({h.id for h in batch.runs}) == 1000
    assert all(h.task == "noop" and not h.is_cached for h in batch.runs)

    # Handles come back in the order of the items.
    for index in (0, 1, 500, 999):
        run = client.retrieve_run(batch.runs[index].id)
        assert run.payload == index
        assert run.status is RunStatus.QUEUED
    listed = list(client.iter_runs(tag="batch-of-1000", limit=500))
    assert {r.id for r in listed} == {h.id for h in batch.runs}


def test_batch_trigger_many_tasks_with_per_item_options(client):
    batch = tasks.batch_trigger_many([
        {"task": "echo", "payload": 1, "options": {"tags": ["first"]}},
        {"task": "sync-echo", "payload": 2},
        {"task": "echo", "payload": 3, "options": {"tags": ["third"], "priority": 5}},
    ], client=client)
    assert [h.task for h in batch.runs] == ["echo", "sync-echo", "echo"]
    runs = [client.poll(h.id, interval=0.1, timeout=30) for h in batch.runs]
    assert [r.status for r in runs] == [RunStatus.COMPLETED] * 3
    assert [r.output["payload"] for r in runs] == [1, 2, 3]
    assert [r.tags for r in runs] == [["first"], [], ["third"]]
    assert runs[2].priority == 5


def test_idempotency_key_returns_the_same_run(client):
    first = tasks.trigger("echo", {"v": 1}, client=client, idempotency_key="order-42", tags=["idem"])
    again = tasks.trigger("echo", {"v": 2}, client=client, idempotency_key="order-42")
    assert again.id == first.id
    assert not first.is_cached and again.is_cached
    run = client.poll(first.id, interval=0.1, timeout=30)
    assert run.payload == {"v": 1}  # the second trigger created nothing
    assert run.idempotency_key == "order-42"
    # Still the same run once it has finished.
    assert tasks.trigger("echo", {"v": 3}, client=client, idempotency_key="order-42").id == first.id

    # Keys are per task, and a different key is a different run.
    other_task = tasks.trigger("noop", None, client=client, idempotency_key="order-42")
    other_key = tasks.trigger("echo", None, client=client, idempotency_key="order-43")
    assert len({first.id, other_task.id, other_key.id}) == 3
    assert not other_task.is_cached and not other_key.is_cached

    # Within one batch, and across batch and single triggers.
    batch = tasks.batch_trigger("echo", [
        {"payload": "a", "options": {"idempotency_key": "in-batch", "tags": ["idem"]}},
        {"payload": "b", "options": {"idempotency_key": "in-batch", "tags": ["idem"]}},
        {"payload": "c", "options": {"idempotency_key": "order-42"}},
    ], client=client)
    assert batch.runs[0].id == batch.runs[1].id
    assert [h.is_cached for h in batch.runs] == [False, True, True]
    assert batch.runs[2].id == first.id
    assert sorted(r.id for r in client.list_runs(tag="idem").data) == sorted({first.id, batch.runs[0].id})


def test_concurrent_triggers_with_one_idempotency_key_make_one_run(client):
    def trigger(n: int):
        return tasks.trigger("echo", n, client=client, idempotency_key="raced", tags=["raced"])

    with ThreadPoolExecutor(max_workers=16) as pool:
        handles = list(pool.map(trigger, range(32)))
    assert len({h.id for h in handles}) == 1
    assert sum(not h.is_cached for h in handles) == 1
    assert [r.id for r in client.list_runs(tag="raced").data] == [handles[0].id]


def test_idempotency_key_ttl(client):
    first = tasks.trigger("echo", 1, client=client, idempotency_key="short", idempotency_key_ttl=1)
    assert tasks.trigger("echo", 2, client=client, idempotency_key="short", idempotency_key_ttl=1).id == first.id
    time.sleep(1.1)
    later = tasks.trigger("echo", 3, client=client, idempotency_key="short")
    assert later.id != first.id and not later.is_cached
    assert client.retrieve_run(later.id).payload == 3
    assert tasks.trigger("echo", 4, client=client, idempotency_key="short").id == later.id


def test_idempotency_keys_survive_a_runtime_restart(runtime):
    client = runtime.client()
    first = tasks.trigger("echo", {"before": "restart"}, client=client, idempotency_key="durable")
    client.poll(first.id, interval=0.1, timeout=30)
    runtime.restart()
    again = tasks.trigger("echo", {"after": "restart"}, client=client, idempotency_key="durable")
    assert again.id == first.id and again.is_cached
    assert client.retrieve_run(first.id).payload == {"before": "restart"}


def test_delay(client):
    before = datetime.now(UTC)
    handle = tasks.trigger("echo", "later", client=client, delay=1)
    run = client.retrieve_run(handle.id)
    assert run.status is RunStatus.DELAYED
    assert before + timedelta(seconds=0.9) <= run.delay_until <= datetime.now(UTC) + timedelta(seconds=1.1)

    at = datetime.now(UTC) + timedelta(seconds=1)
    at_time = tasks.trigger("echo", "at a time", client=client, delay=at)
    assert client.retrieve_run(at_time.id).status is RunStatus.DELAYED
    past = tasks.trigger("echo", "in the past", client=client, delay=datetime.now(UTC) - timedelta(hours=1))
    assert client.retrieve_run(past.id).status is not RunStatus.DELAYED

    for h in (handle, at_time, past):
        run = client.poll(h.id, interval=0.1, timeout=30)
        assert run.status is RunStatus.COMPLETED, run.error
    run = client.retrieve_run(handle.id)
    assert run.started_at >= run.delay_until
    assert client.retrieve_run(at_time.id).started_at >= at - timedelta(milliseconds=5)


def test_ttl_expires_a_run_still_queued(client):
    handle = tasks.trigger("echo", 1, client=client, queue=CLOSED, ttl=0.5)
    run = client.retrieve_run(handle.id)
    assert run.status is RunStatus.QUEUED and run.expires_at is not None
    run = client.poll(handle.id, interval=0.1, timeout=10)
    assert run.status is RunStatus.EXPIRED
    assert run.attempts == 0 and run.started_at is None and run.completed_at is not None
    assert run.completed_at >= run.expires_at

    # A run that started in time is not expired later, not even while it waits out a retry's backoff
    # (here from about 0.3s to 0.7s, past the ttl) queued again.
    retried = tasks.trigger("flaky", {"succeed_on": 3}, client=client, ttl=0.4)
    run = client.poll(retried.id, interval=0.1, timeout=30)
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.attempts == 3


def test_ttl_of_a_delayed_run_counts_from_the_end_of_the_delay(client):
    handle = tasks.trigger("echo", 1, client=client, queue=CLOSED, delay=1, ttl=0.5)
    time.sleep(0.75)  # past the ttl, but still within the delay
    assert client.retrieve_run(handle.id).status is RunStatus.DELAYED
    run = wait_for(lambda: (r := client.retrieve_run(handle.id)).status is not RunStatus.DELAYED and r,
                   timeout=10, message="the delay to elapse")
    assert run.status is RunStatus.QUEUED
    run = client.poll(handle.id, interval=0.1, timeout=10)
    assert run.status is RunStatus.EXPIRED


def test_run_options_are_stored_and_reach_the_task(client):
    handle = tasks.trigger(
        "echo", {"x": 1}, client=client,
        tags=["customer:7", "urgent", "urgent"], metadata={"source": "test", "n": [1, 2]},
        priority=7, concurrency_key="tenant-7", max_attempts=1, max_duration="90s", machine="small-2x",
        queue="reports",
    )
    run = client.poll(handle.id, interval=0.1, timeout=30)
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.tags == ["customer:7", "urgent"]
    assert run.output["tags"] == ["customer:7", "urgent"]
    assert run.metadata == {"source": "test", "n": [1, 2]}
    assert run.priority == 7
    assert run.concurrency_key == "tenant-7"
    assert run.max_attempts == 1
    assert run.max_duration == 90
    assert run.machine == "small-2x"
    assert run.queue == "reports"

    ten = client.retrieve_run(tasks.trigger("noop", None, client=client, tags=[f"t{i}" for i in range(10)],
                                            queue=CLOSED).id)
    assert len(ten.tags) == 10  # the most a run may have

    defaults = client.poll(tasks.trigger("always-fails", None, client=client).id, interval=0.1, timeout=30)
    assert defaults.max_attempts == 2 and defaults.attempts == 2  # from the task's retry policy
    assert defaults.queue == "task/always-fails"
    assert defaults.tags == [] and defaults.metadata == {} and defaults.machine is None


def test_max_attempts_and_max_duration_overrides(client):
    once = tasks.trigger("always-fails", None, client=client, max_attempts=1)
    run = client.poll(once.id, interval=0.1, timeout=30)
    assert run.status is RunStatus.FAILED
    assert run.attempts == 1
    assert run.error is not None and "boom" in run.error.message

    capped = tasks.trigger("sleeper", {"seconds": 30}, client=client, max_duration=1)
    run = client.poll(capped.id, interval=0.1, timeout=20)
    assert run.status is RunStatus.TIMED_OUT
    assert run.attempts == 1


def test_queue_concurrency_limit_and_concurrency_key(make_runtime):
    client = make_runtime(slots=3).client()
    queue = {"name": "per-tenant", "concurrency_limit": 1}
    a1 = tasks.trigger("sleeper", {"seconds": 30}, client=client, queue=queue, concurrency_key="a")
    a2 = tasks.trigger("sleeper", {"seconds": 30}, client=client, queue=queue, concurrency_key="a")
    b1 = tasks.trigger("sleeper", {"seconds": 30}, client=client, queue=queue, concurrency_key="b")

    def status(handle):
        return client.retrieve_run(handle.id).status

    wait_for(lambda: status(a1) is RunStatus.EXECUTING and status(b1) is RunStatus.EXECUTING,
             message="one run of each concurrency key to execute")
    time.sleep(0.75)  # a slot is free: only the queue's limit keeps a2 waiting
    assert status(a2) is RunStatus.QUEUED

    client.cancel_run(a1.id)
    wait_for(lambda: status(a2) is RunStatus.EXECUTING, message="a2 to take a1's place")
    assert status(b1) is RunStatus.EXECUTING
    for handle in (a2, b1):
        client.cancel_run(handle.id)


def test_priority_orders_queued_runs(client):
    queue = {"name": "prioritized"}
    low = tasks.trigger("echo", "low", client=client, queue={**queue, "concurrency_limit": 0}, priority=0)
    high = tasks.trigger("echo", "high", client=client, queue=queue, priority=10)
    mid = tasks.trigger("echo", "mid", client=client, queue=queue, priority=5)
    also_high = tasks.trigger("echo", "also high", client=client, queue=queue, priority=10)
    # Opening the queue (limit 1) lets its runs through one at a time, highest priority first.
    last = tasks.trigger("echo", "last", client=client, queue={**queue, "concurrency_limit": 1}, priority=-1)
    handles = [low, high, mid, also_high, last]
    runs = [client.poll(h.id, interval=0.1, timeout=30) for h in handles]
    assert all(r.status is RunStatus.COMPLETED for r in runs)
    order = [r.payload for r in sorted(runs, key=lambda r: r.started_at)]
    assert order == ["high", "also high", "mid", "low", "last"]


def test_a_runtime_killed_during_a_burst_of_single_triggers_keeps_every_acknowledged_one_once(make_runtime):
    """Group commit's drill: concurrent single triggers share transactions (engine/trigger_groups.py); SIGKILL
    mid-burst, restart: every trigger answered 2xx has its run, and no trigger made two."""
    runtime = make_runtime(slots=1)
    acknowledged: dict[int, str] = {}
    numbers = iter(range(1_000_000))
    lock = threading.Lock()

    def burst() -> None:
        with httpx.Client(base_url=runtime.url, headers={"Authorization": f"Bearer {SECRET_KEY}"}) as http:
            while True:
                with lock:
                    n = next(numbers)
                try:
                    answer = http.post(f"{API_PREFIX}/tasks/noop/trigger", timeout=10,
                                       json={"payload": n, "options": {"tags": ["drill"], "queue": CLOSED}})
                except httpx.HTTPError:
                    return  # the runtime is gone: this call's outcome is unknown, as it is to any client
                if answer.status_code // 100 != 2:
                    return
                with lock:
                    acknowledged[n] = answer.json()["id"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        threads = [pool.submit(burst) for _ in range(8)]
        wait_for(lambda: len(acknowledged) >= 200, timeout=60, message="200 triggers answered")
        runtime.kill()
        for thread in threads:
            thread.result()
    runtime.start()
    client = runtime.client()
    stored = [(run.payload, run.id) for run in client.iter_runs(tag="drill", limit=200)]
    by_payload = dict(stored)
    assert len(by_payload) == len(stored), "a trigger made two runs"
    lost = {n: run_id for n, run_id in acknowledged.items() if by_payload.get(n) != run_id}
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged triggers lost"
