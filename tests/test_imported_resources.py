"""What a tasks module opens at import keeps working in every task process, and after a restore.

Real runtime, real task processes forked from the fork server, real CRIU checkpoints. The project
(tests/projects/imported_resources) opens a log file, an sqlite3 database, a UDP socket, a file in
append mode, a psycopg connection and a SQLAlchemy engine while it is imported; the hooks it
declares write to hooks.txt. The store does not matter here: SQLite only.
"""

from __future__ import annotations

import socket
import sqlite3
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from outlast import RunStatus
from tests.conftest import RuntimeProcess, free_port, runtime_process

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
triggered: set[str] = set()  # every run of this module: the files are the module runtime's


@pytest.fixture(scope="module")
def udp_receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", free_port()))
    sock.settimeout(0.5)
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def pg_table() -> Iterator[str]:
    table = f"imported_rows_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (run text, step text)")
    yield table
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {table}")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, udp_receiver, pg_table) -> Iterator[RuntimeProcess]:
    env = {"OUTLAST_CHECKPOINT_AFTER": "1", "OUTLAST_TASK_PASS_ENV": "OUTLAST_TEST_SCRATCH,RESOURCES_*",
           "RESOURCES_PG_URL": PG_URL, "RESOURCES_PG_TABLE": pg_table,
           "RESOURCES_UDP_PORT": str(udp_receiver.getsockname()[1])}
    started = runtime_process(tmp_path_factory.mktemp("imported"), None, project="imported_resources", slots=2,
                              extra_env=env).start()
    yield started
    started.close()


def finish(runtime: RuntimeProcess, payloads: list[dict]) -> list:
    client = runtime.client()
    handles = [client.trigger("use-imported", payload) for payload in payloads]
    triggered.update(handle.id for handle in handles)
    runs = [client.poll(handle.id, timeout=120) for handle in handles]
    for run in runs:
        assert run.status is RunStatus.COMPLETED, (run.error, runtime.log()[-3000:])
    return runs


def datagrams(sock: socket.socket) -> list[str]:
    received = []
    try:
        while True:
            received.append(sock.recv(200).decode())
    except TimeoutError:
        return received


def hook_lines(runtime: RuntimeProcess) -> list[list[str]]:
    path = runtime.scratch / "hooks.txt"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def assert_every_write_landed(runtime: RuntimeProcess, udp: socket.socket, table: str, expected: set[str]) -> None:
    """Each "<run> <step>" line is in each place exactly once, and nothing else is there."""
    scratch = runtime.scratch
    journal = (scratch / "journal.txt").read_text().splitlines()
    assert journal.count("imported") == 1, "what the import buffered reached the file once"
    with sqlite3.connect(scratch / "rows.sqlite3") as db:
        rows = [f"{run} {step}" for run, step in db.execute("SELECT run, step FROM row")]
    with psycopg.connect(PG_URL) as conn:
        pg_rows = [f"{run} {step}" for run, step in conn.execute(f"SELECT * FROM {table}")]
    places = {"the log file": (scratch / "tasks.log").read_text().splitlines(),
              "the append-mode file": [line for line in journal if line != "imported"],
              "the sqlite file": rows, "the UDP receiver": datagrams(udp), "the PostgreSQL table": pg_rows}
    for place, lines in places.items():
        assert all(line.split()[0] in triggered for line in lines), f"a stray write in {place}: {lines}"
        mine = Counter(line for line in lines if line in expected)
        assert mine == Counter(expected), f"{place} has each line once"


def assert_own_connections(runtime: RuntimeProcess, uses: list[dict]) -> None:
    """Each task process has its own PostgreSQL sessions: none shared, none the importing process's."""
    imported = int((runtime.scratch / "import-backend.txt").read_text())
    by_backend: dict[int, set[str]] = {}
    for use in uses:
        for backend in (use["backend"], use["engine_backend"]):
            assert backend != imported, "no task process talks on the fork server's connection"
            by_backend.setdefault(backend, set()).add(use["process"])
    assert all(len(processes) == 1 for processes in by_backend.values()), by_backend


def test_what_the_import_opened_works_in_every_task_process(runtime, udp_receiver, pg_table):
    runs = finish(runtime, [{} for _ in range(8)])

    assert_every_write_landed(runtime, udp_receiver, pg_table, {f"{run.id} before" for run in runs})
    uses = [run.output["before"] for run in runs]
    assert_own_connections(runtime, uses)
    processes = {use["process"] for use in uses}
    starts = [process for kind, process in hook_lines(runtime) if kind == "start"]
    assert sorted(starts) == sorted(set(starts)), "on_process_start ran once per process"
    assert processes <= set(starts), "every process that ran an attempt ran on_process_start first"


def test_after_a_checkpoint_and_restore_everything_still_works(runtime, udp_receiver, pg_table):
    client = runtime.client()
    waiting = [client.trigger("use-imported", {"wait": 4}) for _ in range(2)]
    triggered.update(handle.id for handle in waiting)
    meanwhile = finish(runtime, [{} for _ in range(4)])  # the files grow while the two are frozen
    runs = [client.poll(handle.id, timeout=180) for handle in waiting]
    for run in runs:
        assert run.status is RunStatus.COMPLETED, (run.error, runtime.log()[-3000:])
        waiting = next(e for e in client.run_events(run.id) if e.data.get("status") == "WAITING")
        assert waiting.data.get("checkpoint", {}).get("mode") == "criu", waiting

    expected = {f"{run.id} before" for run in runs} | {f"{run.id} after" for run in runs}
    expected |= {f"{run.id} before" for run in meanwhile}
    assert_every_write_landed(runtime, udp_receiver, pg_table, expected)
    assert_own_connections(runtime, [run.output["after"] for run in runs])
    for run in runs:
        process = run.output["after"]["process"]
        mine = [kind for kind, owner in hook_lines(runtime) if owner == process]
        assert mine == ["start", "resume"], "once at the process's start, once after its restore"


def test_a_raising_resume_hook_fails_the_attempt_even_if_the_task_catches_it(runtime):
    client = runtime.client()
    flag = runtime.scratch / "fail-resume"
    flag.touch()
    try:
        run = client.poll(client.trigger("catches-everything", {"wait": 3}).id, timeout=120)
    finally:
        flag.unlink()
    assert run.status is RunStatus.FAILED
    assert "on_resume hook tasks.reconnect_postgres_after_restore failed: RuntimeError: the database is not there" \
        in run.error.message


def test_a_raising_process_start_hook_fails_the_attempt_naming_the_hook(tmp_path: Path):
    runtime = runtime_process(tmp_path, None, project="failing_hook", slots=1).start()
    try:
        client = runtime.client()
        run = client.poll(client.trigger("never-starts", {}).id, timeout=60)
    finally:
        runtime.close()
    assert run.status is RunStatus.FAILED
    assert run.error.message == "on_process_start hook tasks.open_pool failed: RuntimeError: the pool refused"


def test_a_django_connection_is_never_shared_by_two_concurrent_runs(tmp_path: Path):
    runtime = runtime_process(tmp_path, None, project="django_pg", slots=2,
                              extra_env={"DJANGO_SETTINGS_MODULE": "djpg.settings", "DJPG_DB_URL": PG_URL,
                                         "OUTLAST_TASK_PASS_ENV": "OUTLAST_TEST_SCRATCH,DJANGO_*,DJPG_*"}).start()
    try:
        client = runtime.client()
        handles = [client.trigger("dj-backend", {"hold": 2}) for _ in range(2)]
        runs = [client.poll(handle.id, timeout=60) for handle in handles]
        again = client.poll(client.trigger("dj-backend", {"hold": 0}).id, timeout=60)
    finally:
        runtime.close()
    for run in (*runs, again):
        assert run.status is RunStatus.COMPLETED, run.error
    imported = int((runtime.scratch / "import-backend.txt").read_text())
    first, second = (run.output for run in runs)
    assert first["process"] != second["process"], "the two runs ran at the same time, in two processes"
    assert first["first"] == first["last"] and second["first"] == second["last"]
    assert len({first["first"], second["first"], imported}) == 3, "each process has its own connection"
    earlier = next(run.output for run in runs if run.output["process"] == again.output["process"])
    assert again.output["first"] != earlier["first"], "closed after each attempt (CONN_MAX_AGE = 0)"
