"""The database goes away under load: the API answers 503 with Retry-After (never 500), the SDK retries
keyed triggers, and every key ends with exactly one run.

The drill cuts the runtime's PostgreSQL connections with `pg_terminate_backend` over and over rather
than restarting PostgreSQL: the server is shared by every test (and engineer) on this machine, and for
the runtime a terminated backend is what a restart looks like (each open connection fails, new ones
must be made), minus the seconds in which new ones are refused, which the SDK's unit test covers.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from outlast import Client, tasks
from tests.conftest import PG_ADMIN_URL, SECRET_KEY

CLOSED = {"name": "closed-while-away", "concurrency_limit": 0}  # never claimed: the runs stay QUEUED
KEYS = 100  # enough that many triggers meet a cut connection (asserted), few enough to take seconds


class StatusRecorder(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []
        self.retry_after: set[str | None] = set()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        if response.status_code == 503:
            self.retry_after.add(response.headers.get("retry-after"))
        return response


def _terminate_backends(database: str, stop: threading.Event) -> int:
    killed = 0
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        while not stop.wait(0.03):
            rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = %s AND pid <> pg_backend_pid()", (database,)).fetchall()
            killed += len(rows)
    return killed


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_keyed_burst_while_connections_are_cut(make_runtime, store):
    runtime = make_runtime()
    recorder = StatusRecorder()
    stop = threading.Event()
    with Client(api_url=runtime.url, secret_key=SECRET_KEY, transport=recorder, timeout=30) as client, \
            ThreadPoolExecutor(5) as pool:
        cutter = pool.submit(_terminate_backends, store.rsplit("/", 1)[1], stop)

        def trigger(index: int) -> str:
            return tasks.trigger("noop", index, client=client, idempotency_key=f"away-{index}", queue=CLOSED,
                                 tags=["db-away"]).id

        try:
            ids = list(pool.map(trigger, range(KEYS)))
        finally:
            stop.set()
        assert cutter.result() > 0

    assert set(recorder.statuses) <= {200, 503}, sorted(set(recorder.statuses))
    assert 503 in recorder.statuses, "no request met a cut connection: the drill proved nothing"
    assert recorder.retry_after == {"1"}
    assert len(set(ids)) == KEYS  # one run per key: a retried trigger found its run, none was lost

    with runtime.client() as calm:
        listed = [run for run in calm.iter_runs(tag="db-away", limit=500)]
        assert sorted(run.idempotency_key for run in listed) == sorted(f"away-{i}" for i in range(KEYS))
        assert {run.id for run in listed} == set(ids)
        again = tasks.trigger("noop", 0, client=calm, idempotency_key="away-0", queue=CLOSED)
        assert again.is_cached and again.id == ids[0]
