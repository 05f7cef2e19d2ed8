"""Shared fixtures: a real runtime in a subprocess, on SQLite or PostgreSQL, and a client for it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from outlast import Client

ROOT = Path(__file__).resolve().parent.parent
PROJECTS = Path(__file__).resolve().parent / "projects"
PG_ADMIN_URL = os.environ.get("OUTLAST_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET_KEY = "ol_dev_test_0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM, and SIGKILL if it has not ended within `grace` seconds."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class RuntimeProcess:
    """`outlast runtime` in a subprocess; `restart()` keeps its store, `kill()` is SIGKILL."""

    args: list[str]
    env: dict[str, str]
    url: str
    scratch: Path
    log_path: Path
    process: subprocess.Popen | None = None
    clients: list[Client] = field(default_factory=list)

    def start(self) -> RuntimeProcess:
        log = open(self.log_path, "a")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"runtime exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/api/v1/health", timeout=1).status_code == 200 and self._tasks_ready():
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"runtime did not become healthy:\n{self.log()}")

    def _tasks_ready(self) -> bool:
        if "--project" not in self.args:
            return True
        response = httpx.get(self.url + "/api/v1/tasks", headers={"Authorization": f"Bearer {SECRET_KEY}"})
        return response.status_code == 200 and len(response.json()) > 0

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def client(self, secret_key: str = SECRET_KEY) -> Client:
        client = Client(api_url=self.url, secret_key=secret_key, timeout=30)
        self.clients.append(client)
        return client

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL the runtime alone: its task processes notice the lost supervisor and exit."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def restart(self) -> RuntimeProcess:
        self.stop()
        return self.start()

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.stop()


def _create_pg_database() -> str:
    import psycopg

    name = f"outlast_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def _drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The database URL for a runtime: None (SQLite in its data dir) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    name = _create_pg_database()
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    _drop_pg_database(name)


def runtime_process(tmp_path: Path, database_url: str | None, *, project: str | None = "basic", slots: int = 2,
                    node_id: str = "node-0", log_name: str = "runtime.log", extra_env: dict[str, str] | None = None,
                    extra_args: list[str] | None = None) -> RuntimeProcess:
    """An `outlast runtime` command line for the tests (not started yet): data and scratch in `tmp_path`."""
    port = free_port()
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    args = [sys.executable, "-m", "outlast.cli", "runtime", "--port", str(port), "--slots", str(slots),
            "--data-dir", str(tmp_path / "data"), "--node-id", node_id]
    if database_url:
        args += ["--database-url", database_url]
    if project:
        args += ["--project", str(PROJECTS / project)]
    args += extra_args or []
    # Task processes see none of the runtime's environment unless named: the fixture projects read the scratch.
    env = {**os.environ, "OUTLAST_SECRET_KEY": SECRET_KEY, "OUTLAST_TEST_SCRATCH": str(scratch),
           "OUTLAST_TASK_PASS_ENV": "OUTLAST_TEST_SCRATCH",
           "OUTLAST_HEARTBEAT_INTERVAL": "0.5", "OUTLAST_CANCEL_GRACE": "2", **(extra_env or {})}
    env.pop("OUTLAST_DATABASE_URL", None)
    return RuntimeProcess(args=args, env=env, url=f"http://127.0.0.1:{port}", scratch=scratch,
                          log_path=tmp_path / log_name)


@pytest.fixture
def make_runtime(tmp_path: Path, store: str | None) -> Iterator:
    """Start runtimes against the same store: `make_runtime(project="basic", slots=2, env={...})`."""
    started: list[RuntimeProcess] = []

    def make(project: str | None = "basic", slots: int = 2, extra_env: dict[str, str] | None = None,
             extra_args: list[str] | None = None) -> RuntimeProcess:
        runtime = runtime_process(tmp_path, store, project=project, slots=slots, node_id=f"node-{len(started)}",
                                  log_name=f"runtime-{len(started)}.log", extra_env=extra_env,
                                  extra_args=extra_args)
        started.append(runtime)
        return runtime.start()

    yield make
    for runtime in started:
        runtime.close()


@pytest.fixture
def runtime(make_runtime) -> RuntimeProcess:
    return make_runtime()


@pytest.fixture
def client(runtime: RuntimeProcess) -> Client:
    return runtime.client()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, message: str = "condition"):
    """Poll until `predicate()` is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


# Credentials moto accepts, as a runtime subprocess reads them from its environment.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def moto_s3(bucket: str, host: str = "127.0.0.1") -> Iterator[str]:
    """moto's S3 server on a free port of `host` with `bucket` in it; yields its endpoint URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    endpoint = f"http://{host}:{port}"
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.stop()
