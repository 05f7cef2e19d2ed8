"""PostgreSQL restarted (for real: a server of the test's own) during a burst of keyed triggers sent
to two runtimes, each running tasks too: the API answers only 200 or 503, the SDK retries the
keyed triggers, every key ends with exactly one run, and each run executes once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from outlast import Client, RunStatus, tasks
from tests.cluster.private_pg import private_postgres
from tests.conftest import SECRET_KEY, runtime_process
from tests.e2e.test_database_away import StatusRecorder

KEYS = 120


def test_a_postgres_restart_during_a_keyed_burst_loses_and_repeats_nothing(tmp_path: Path):
    with private_postgres() as database:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        runtimes = [runtime_process(tmp_path / name, database.url, project="cluster", node_id=f"node-{name}")
                    for name in ("a", "b")]
        scratch = tmp_path / "scratch"
        scratch.mkdir()
        for runtime in runtimes:  # one scratch for both, to count each run's executions wherever it ran
            runtime.env["OUTLAST_TEST_SCRATCH"] = str(scratch)
        try:
            for runtime in runtimes:
                runtime.start()
            recorders = [StatusRecorder(), StatusRecorder()]
            clients = [Client(api_url=r.url, secret_key=SECRET_KEY, transport=rec, timeout=30)
                       for r, rec in zip(runtimes, recorders, strict=True)]
            sent = threading.Semaphore(0)

            def trigger(index: int) -> str:
                run = tasks.trigger("count", {"to": 1000, "every": 1000}, client=clients[index % 2],
                                    idempotency_key=f"restart-{index}", tags=["db-restart"])
                sent.release()
                return run.id

            with ThreadPoolExecutor(5) as pool:
                burst = pool.map(trigger, range(KEYS))
                for _ in range(KEYS // 4):
                    sent.acquire()
                database.restart()
                ids = list(burst)

            statuses = recorders[0].statuses + recorders[1].statuses
            assert set(statuses) <= {200, 503}, sorted(set(statuses))
            assert 503 in statuses, "no request met the restart: the drill proved nothing"
            assert len(set(ids)) == KEYS, "one run per key: a retried trigger found its run, none was lost"
            with runtimes[0].client() as calm:
                for run_id in ids:
                    run = calm.poll(run_id, interval=0.2, timeout=120)
                    assert run.status is RunStatus.COMPLETED and run.attempts == 1, \
                        [e.message for e in calm.run_events(run_id)]
                    assert (scratch / f"{run_id}.done").read_text() == "1\n", "executed once"
                listed = list(calm.iter_runs(tag="db-restart", limit=500))
                assert sorted(r.idempotency_key for r in listed) == sorted(f"restart-{i}" for i in range(KEYS))
            for client in clients:
                client.close()
        finally:
            for runtime in runtimes:
                runtime.close()
