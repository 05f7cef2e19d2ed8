"""The systems under test: an outlast runtime (SQLite or PostgreSQL store) and Celery on Redis."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta

from .common import BENCH, RESULTS, ROOT, Service, descendants, free_port, postgres_pids, wait_until
from .workloads import Target

SECRET_KEY = "ol_bench_0123456789abcdef"
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
LOGS = RESULTS / "logs"
LIVE_STATUSES = ["DELAYED", "QUEUED", "EXECUTING", "WAITING"]


class OutlastTarget(Target):
    """`outlast runtime` with 2 slots serving bench/project, in a subprocess on a fresh store."""

    def __init__(self, store: str, slots: int = 2) -> None:
        self.store = store
        self.slots = slots
        self.key = f"outlast-{store}"
        self.label = f"outlast ({'SQLite' if store == 'sqlite' else 'PostgreSQL'})"
        self.service: Service | None = None
        self.client = None
        self.database: str | None = None
        self.data_dir: str | None = None
        self._mark: datetime | None = None
        self._batch = None

    # --- lifecycle ---

    def start(self) -> None:
        from outlast import Client
        from outlast.wire import BatchItem

        self.data_dir = tempfile.mkdtemp(prefix="outlast-bench-")
        port = free_port()
        args = [sys.executable, "-m", "outlast.cli", "runtime", "--port", str(port), "--slots", str(self.slots),
                "--data-dir", os.path.join(self.data_dir, "data"), "--project", str(BENCH / "project"),
                "--node-id", "bench"]
        if self.store == "postgres":
            self.database = _create_pg_database()
            args += ["--database-url", PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + self.database]
        env = {**os.environ, "OUTLAST_SECRET_KEY": SECRET_KEY}
        env.pop("OUTLAST_DATABASE_URL", None)
        log = LOGS / f"{self.key}.log"
        log.unlink(missing_ok=True)
        self.service = Service(self.key, args, env, log).start()
        self.url = f"http://127.0.0.1:{port}"
        self.client = Client(api_url=self.url, secret_key=SECRET_KEY, timeout=60)
        wait_until(self._ready, timeout=90, interval=0.1, what=f"{self.label} to serve its tasks",
                   alive=self.service.check_alive)
        # Built once: the client re-validates nothing when handed model instances.
        self._batch = [BatchItem(task="noop") for _ in range(1000)]

    def _ready(self) -> bool:
        import httpx

        try:
            tasks = httpx.get(self.url + "/api/v1/tasks", headers={"Authorization": f"Bearer {SECRET_KEY}"},
                              timeout=2)
        except httpx.HTTPError:
            return False
        return tasks.status_code == 200 and {"noop", "stamp"} <= {t["id"] for t in tasks.json()}

    def stop(self) -> None:
        try:
            if self.client is not None:
                self.client.close()
            if self.service is not None:
                self.service.stop()
        finally:
            if self.database:
                _drop_pg_database(self.database)
            if self.data_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    # --- workloads ---

    def trigger_noop(self) -> None:
        self.client.trigger("noop")

    def trigger_noops(self, count: int) -> None:
        items = self._batch[:count] if count <= len(self._batch) else [self._batch[0]] * count
        self.client.batch_trigger(items)

    def trigger_stamp(self, payload: dict) -> str:
        return self.client.trigger("stamp", payload).id

    def mark(self) -> None:
        self._mark = datetime.now(UTC) - timedelta(milliseconds=1)

    def wait_done(self, expected: int, timeout: float) -> float:
        """Poll until no run is live; then check every run since `mark()` completed, and return the
        latest `completed_at` (the runtime's clock, which is this machine's)."""
        wait_until(lambda: not self.client.list_runs(status=LIVE_STATUSES, limit=1).data, timeout,
                   interval=0.2, what=f"{expected} runs to finish", alive=self.service.check_alive)
        completed, last, bad = 0, 0.0, []
        for run in self.client.iter_runs(created_after=self._mark, limit=500):
            if run.status.value == "COMPLETED":
                completed += 1
            else:
                bad.append(f"{run.id} {run.status.value}: {run.error}")
            if run.completed_at is not None:
                last = max(last, run.completed_at.timestamp())
        if bad or completed != expected:
            raise RuntimeError(f"{self.label}: expected {expected} completed runs, found {completed}; "
                               f"not completed: {bad[:3]}")
        return last

    def latency_extras(self, samples: list[dict]) -> dict[str, float]:
        """Where the time goes, from the runs' own timestamps (this machine's clock throughout):
        request -> run created (HTTP, validation), created -> started (commit, wake-up, claim),
        started -> task function running (hand-over to the warm task process)."""
        from .common import percentile

        wanted = {s["handle"]: s for s in samples}
        runs = {r.id: r for r in self.client.iter_runs(task="stamp", created_after=self._mark, limit=500)
                if r.id in wanted}
        parts: dict[str, list[float]] = {"request_to_created": [], "created_to_started": [],
                                         "started_to_task": []}
        for run_id, sample in wanted.items():
            run = runs.get(run_id)
            if run is None or run.started_at is None:
                continue
            created, started = run.created_at.timestamp(), run.started_at.timestamp()
            parts["request_to_created"].append(created - sample["before"])
            parts["created_to_started"].append(started - created)
            parts["started_to_task"].append(sample["started"] - started)
        return {f"{name}_p50_ms": percentile([v * 1000 for v in values], 50) for name, values in parts.items()}

    def cpu_groups(self):
        groups = {"runtime process": lambda: [self.service.pid],
                  "task processes": lambda: descendants(self.service.pid)}
        if self.store == "postgres":
            groups["postgres server"] = lambda: postgres_pids(self.database)
        return groups


def _create_pg_database() -> str:
    import psycopg

    name = f"outlast_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def _drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class CeleryTarget(Target):
    """`celery worker --pool prefork -c 2` on Redis database 15 (flushed before and after)."""

    key = "celery"
    label = "Celery"
    batch_note = "no batch API: group() of 1000 apply_async"

    def __init__(self, concurrency: int = 2) -> None:
        self.concurrency = concurrency
        self.service: Service | None = None
        self.redis = None

    def start(self) -> None:
        import redis

        from . import celery_app

        self.app = celery_app
        self.redis = redis.Redis.from_url(celery_app.BROKER_URL)
        self.redis.flushdb()
        args = [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker", "--pool", "prefork",
                "-c", str(self.concurrency), "--loglevel", "WARNING", "--hostname", f"bench-{uuid.uuid4().hex[:6]}@%h"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        log = LOGS / "celery.log"
        log.unlink(missing_ok=True)
        self.service = Service("celery worker", args, env, log).start()
        wait_until(lambda: self.redis.get(celery_app.READY_KEY), timeout=90, interval=0.1,
                   what="the Celery worker to be ready", alive=self.service.check_alive)
        self.version = __import__("celery").__version__

    def stop(self) -> None:
        try:
            if self.service is not None:
                self.service.stop()
        finally:
            if self.redis is not None:
                self.redis.flushdb()
                self.redis.close()

    def trigger_noop(self) -> None:
        self.app.noop.delay()

    def trigger_noops(self, count: int) -> None:
        from celery import group

        group(self.app.noop.s() for _ in range(count)).apply_async()

    def trigger_stamp(self, payload: dict) -> str:
        return self.app.stamp.delay(payload).id

    def mark(self) -> None:
        self.redis.delete(self.app.DONE_KEY, self.app.DONE_AT_KEY)

    def wait_done(self, expected: int, timeout: float) -> float:
        """Poll the tasks' Redis counter (every 20 ms: one GET) until it reaches `expected`."""
        wait_until(lambda: int(self.redis.get(self.app.DONE_KEY) or 0) >= expected, timeout, interval=0.02,
                   what=f"{expected} Celery tasks to finish", alive=self.service.check_alive)
        time.sleep(0.05)
        done = int(self.redis.get(self.app.DONE_KEY) or 0)
        if done != expected:
            raise RuntimeError(f"Celery: expected {expected} finished tasks, counted {done}")
        return float(self.redis.get(self.app.DONE_AT_KEY))

    def cpu_groups(self):
        groups = {"worker main process": lambda: [self.service.pid],
                  "pool processes": lambda: descendants(self.service.pid)}
        redis_pid = int(self.redis.info("server").get("process_id", 0))
        if redis_pid:
            groups["redis server"] = lambda: [redis_pid]
        return groups
