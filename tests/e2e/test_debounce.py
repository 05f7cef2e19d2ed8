"""Debounce through the SDK and the API of real runtimes: collapsing, bad options, two runtimes on one PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest

from outlast import InvalidRequestError, RunStatus, tasks
from tests.conftest import PG_ADMIN_URL, SECRET_KEY, _create_pg_database, _drop_pg_database, runtime_process
from tests.e2e._shared import shared_runtime_fixture

shared_runtime = shared_runtime_fixture()


def test_trailing_triggers_become_one_run_with_the_last_payload(shared_runtime):
    client = shared_runtime.client()
    key, tag = uuid.uuid4().hex, uuid.uuid4().hex
    handles = [tasks.trigger("echo", {"n": n}, client=client, tags=[tag],
                             debounce={"key": key, "delay": "3s", "max_delay": "1m"}) for n in range(4)]
    assert len({h.id for h in handles}) == 1
    assert client.retrieve_run(handles[0].id).status is RunStatus.DELAYED
    run = client.poll(handles[0].id, interval=0.2, timeout=60)
    assert run.status is RunStatus.COMPLETED and run.output["payload"] == {"n": 3}
    assert [r.id for r in client.list_runs(tag=tag).data] == [run.id]


def test_leading_runs_the_first_at_once_and_returns_it_to_later_triggers(shared_runtime):
    client = shared_runtime.client()
    key = uuid.uuid4().hex
    first = tasks.trigger("echo", "first", client=client, debounce={"key": key, "delay": "1m", "mode": "leading"})
    run = client.poll(first.id, interval=0.1, timeout=60)  # not delayed: it runs while the window is open
    assert run.output["payload"] == "first"
    again = tasks.trigger("echo", "second", client=client, debounce={"key": key, "delay": "1m", "mode": "leading"})
    assert again.id == first.id


def test_batch_items_take_debounce_too(shared_runtime):
    client = shared_runtime.client()
    key = uuid.uuid4().hex
    options = {"debounce": {"key": key, "delay": "1h"}}
    handle = client.batch_trigger([{"task": "echo", "payload": n, "options": options} for n in range(3)])
    assert len({h.id for h in handle.runs}) == 1
    run = client.retrieve_run(handle.runs[0].id)
    assert (run.status, run.payload) == (RunStatus.DELAYED, 2)
    client.cancel_run(run.id)


@pytest.mark.parametrize(("debounce", "field"), [
    ({"key": "", "delay": 5}, "options.debounce.key"),
    ({"key": "k" * 513, "delay": 5}, "options.debounce.key"),
    ({"key": "k", "delay": "1e400"}, "options.debounce.delay"),
    ({"key": "k", "delay": 0}, "options.debounce.delay"),
    ({"key": "k", "delay": 366 * 86400}, "options.debounce.delay"),
    ({"key": "k", "delay": 5, "max_delay": 4}, "options.debounce.max_delay"),
    ({"key": "k", "delay": 5, "mode": "both"}, "options.debounce.mode"),
    ({"key": "k", "delay": 5, "extra": 1}, "options.debounce.extra"),
    ({"delay": 5}, "options.debounce.key"),
])
def test_bad_debounce_options_are_422_naming_the_field(shared_runtime, debounce, field):
    response = httpx.post(f"{shared_runtime.url}/api/v1/tasks/echo/trigger", timeout=10,
                          headers={"Authorization": f"Bearer {SECRET_KEY}"},
                          json={"payload": 1, "options": {"debounce": debounce}})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    with pytest.raises(InvalidRequestError) as caught:
        tasks.trigger("echo", 1, client=shared_runtime.client(), debounce=debounce)
    assert caught.value.field == field.removeprefix("options.")


def test_debounce_beside_a_delay_is_refused(shared_runtime):
    response = httpx.post(f"{shared_runtime.url}/api/v1/tasks/echo/trigger", timeout=10,
                          headers={"Authorization": f"Bearer {SECRET_KEY}"},
                          json={"options": {"delay": 5, "debounce": {"key": "k", "delay": 5}}})
    assert response.status_code == 422 and response.json()["field"] == "options.debounce"


# --- two runtimes, one PostgreSQL database -------------------------------------------------------------


@pytest.fixture
def two_runtimes(tmp_path) -> Iterator[tuple]:
    name = _create_pg_database()
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    worker = runtime_process(tmp_path / "a", url, node_id="a")  # registers and runs the tasks
    api_only = runtime_process(tmp_path / "b", url, project=None, node_id="b")
    try:
        yield worker.start(), api_only.start()
    finally:
        worker.close()
        api_only.close()
        _drop_pg_database(name)


@pytest.mark.parametrize("mode", ["trailing", "leading"])
def test_concurrent_triggers_on_two_runtimes_make_one_run(two_runtimes, mode):
    clients = [runtime.client() for runtime in two_runtimes]
    key, tag = uuid.uuid4().hex, uuid.uuid4().hex
    ids: list[str] = []
    start = threading.Barrier(8)

    def burst(index: int) -> None:
        client = clients[index % 2]
        start.wait()
        for n in range(10):
            handle = tasks.trigger("echo", {"thread": index, "n": n}, client=client, tags=[tag],
                                   debounce={"key": key, "delay": "20s", "mode": mode})
            ids.append(handle.id)

    threads = [threading.Thread(target=burst, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 80 and len(set(ids)) == 1
    assert [r.id for r in clients[1].list_runs(tag=tag).data] == ids[:1]
    run = clients[0].retrieve_run(ids[0])
    if mode == "trailing":
        assert run.status is RunStatus.DELAYED
        assert run.payload["n"] == 9  # the last trigger of some thread, never an older one
    clients[0].cancel_run(ids[0])
