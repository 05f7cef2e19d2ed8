"""Two runtimes on one PostgreSQL database: a trigger accepted by one is run by the other's worker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from outlast import RunStatus
from tests.conftest import PG_ADMIN_URL, _create_pg_database, _drop_pg_database, runtime_process


@pytest.fixture
def shared_database() -> Iterator[str]:
    name = _create_pg_database()
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    _drop_pg_database(name)


def test_work_triggered_on_one_replica_wakes_the_worker_of_another(tmp_path, shared_database):
    # Both poll only once a minute: the run can start within the test's time only through the
    # NOTIFY that the accepting replica sends and the other one LISTENs for.
    slow_poll = {"OUTLAST_POLL_INTERVAL": "60"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    api_only = runtime_process(tmp_path / "a", shared_database, project=None, node_id="api", extra_env=slow_poll)
    worker = runtime_process(tmp_path / "b", shared_database, node_id="worker", extra_env=slow_poll)
    worker.start()
    api_only.start()
    try:
        with api_only.client() as client:
            for _ in range(3):  # and again once the worker sits idle in its long poll
                run = client.poll(client.trigger("echo", {"replica": True}).id, interval=0.1, timeout=20)
                assert run.status is RunStatus.COMPLETED
                assert run.output["payload"] == {"replica": True}
        events = [e.message for e in api_only.client().run_events(run.id)]
        assert any("started on worker" in message for message in events)
    finally:
        api_only.close()
        worker.close()
