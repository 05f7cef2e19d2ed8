"""Isolation of task processes (OUTLAST_ISOLATION=namespaces) on a real runtime with real task
processes and real CRIU: each version's fork server runs in its own mount, IPC and UTS namespaces
where the runtime's data directory is hidden, the root and the code are read-only and /tmp is
private; a waiting run is checkpointed and restored with its state and its sandbox."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from outlast import RunStatus
from outlast.cli import app
from outlast.runtime.checkpoint import criu
from tests.conftest import RuntimeProcess, runtime_process, wait_for
from tests.e2e._shared import process_gone

ENV = {"OUTLAST_ISOLATION": "namespaces", "OUTLAST_CHECKPOINT_AFTER": "1"}
pytestmark = pytest.mark.skipif(not criu.check().available, reason="needs CRIU")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    root = tmp_path_factory.mktemp("isolation")  # shared with tasks, its data directory inside hidden still
    started = runtime_process(root, None, project="isolation", slots=2,
                              extra_env={**ENV, "OUTLAST_ISOLATION_SHARE": str(root)})
    try:
        yield started.start()
    finally:
        started.close()


@pytest.fixture
def client(runtime):
    return runtime.client()


def data_dir(runtime: RuntimeProcess) -> Path:
    return Path(runtime.args[runtime.args.index("--data-dir") + 1])


def finished(client, run_id: str, timeout: float = 90):
    return wait_for(lambda: (run := client.retrieve_run(run_id)).is_final and run, timeout=timeout,
                    message=f"run {run_id} to finish")


def completed(client, task_id: str, payload: dict) -> dict:
    run = finished(client, client.trigger(task_id, payload).id)
    assert run.status is RunStatus.COMPLETED, run.error
    return run.output


def test_health_and_log_say_which_isolation(runtime):
    body = httpx.get(f"{runtime.url}/api/v1/health").json()
    assert body["isolation"] == "namespaces"
    assert "isolation: namespaces" in runtime.log()


def test_a_task_cannot_read_the_database_the_checkpoint_store_or_the_key_file(runtime, client):
    data = data_dir(runtime)
    secrets = [data / "outlast.db", data / "encryption.key"]
    assert all(path.is_file() for path in secrets), "the runtime made them (else the test proves nothing)"
    (data / "checkpoints").mkdir(exist_ok=True)
    stored = data / "checkpoints" / "planted-image"
    stored.write_text("another run's image")
    output = completed(client, "probe", {"read": [str(p) for p in [*secrets, stored]],
                                         "write": [str(data / "outlast.db")]})
    assert output["read"] == {str(p): "No such file or directory" for p in [*secrets, stored]}
    assert output["write"][str(data / "outlast.db")] != "ok"
    assert stored.read_text() == "another run's image"


def test_a_task_cannot_write_its_code_but_can_write_its_working_directory(runtime, client):
    before = (Path(__file__).parents[1] / "projects" / "isolation" / "tasks.py").read_text()
    output = completed(client, "probe", {})
    assert output["write_code"] == "Read-only file system"
    assert output["create_in_code"] == "Read-only file system"
    assert output["write_cwd"] == "ok"
    assert output["cwd"].startswith("/tmp/outlast-tasks/") and output["tmpdir"] == output["cwd"]
    assert output["no_new_privs"] == "1"
    assert output["hostname"] == "outlast-task"
    assert (Path(__file__).parents[1] / "projects" / "isolation" / "tasks.py").read_text() == before


def test_a_tasks_tmp_is_private(runtime, client, tmp_path):
    host_file = Path("/tmp") / f"{tmp_path.name}-host-secret"
    host_file.write_text("written outside the sandbox")  # as another runtime's run or a host process would
    try:
        output = completed(client, "probe", {"read": [str(host_file)]})
        assert output["read"][str(host_file)] == "No such file or directory"
        written = completed(client, "write-tmp", {"name": f"{tmp_path.name}-task", "text": "inside"})
        assert f"{tmp_path.name}-task" in written["listing"]
        assert host_file.name not in written["listing"]
        assert not (Path("/tmp") / f"{tmp_path.name}-task").exists(), "the task's /tmp is not the host's"
    finally:
        host_file.unlink()


def test_a_shared_directory_is_writable_and_the_data_directory_inside_it_still_hidden(runtime, client):
    shared = data_dir(runtime).parent
    output = completed(client, "write-file", {"path": str(shared / "scratch" / "from-a-task"), "text": "shared",
                                              "list": str(shared)})
    assert (shared / "scratch" / "from-a-task").read_text() == "shared"
    assert "data" in output["listing"], "the data directory's mount point shows, its contents do not"
    assert output["data_listing"] == []


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the host"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_outbound_http_works(client):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        output = completed(client, "fetch", {"url": f"http://127.0.0.1:{server.server_address[1]}/"})
    finally:
        server.shutdown()
    assert output == {"status": 200, "body": "hello from the host"}


def test_a_checkpointed_run_resumes_with_its_state_and_its_isolation(runtime, client, tmp_path):
    database = data_dir(runtime) / "outlast.db"
    host_shm = Path("/dev/shm") / f"{tmp_path.name}-host"  # as PostgreSQL's segments: not the task's, not in its image
    host_shm.write_text("host shared memory")
    try:
        check_a_checkpointed_run(client, database)
    finally:
        host_shm.unlink()


def check_a_checkpointed_run(client, database: Path) -> None:
    handle = client.trigger("isolated-wait", {"text": "kept in the private /tmp", "seconds": 6,
                                              "read": [str(database)]})
    wait_for(lambda: any("checkpointed" in e.message for e in client.run_events(handle.id) if e.kind == "status"),
             timeout=60, message="the waiting run to be checkpointed")
    run = finished(client, handle.id)
    assert run.status is RunStatus.COMPLETED, run.error
    output = run.output
    assert process_gone(output["host_pid_before"]), "the process that waited was dumped, not kept"
    assert output["counter"] == 42 and output["items"] == 1000
    assert output["tmp"] == "kept in the private /tmp"
    assert output["shm"] == [], "a private /dev/shm"
    assert output["shm_mounts"] == 1, "the host's is gone, not covered (else CRIU dumps its contents)"
    assert output["read"] == {str(database): "No such file or directory"}
    assert output["write_code"] == "Read-only file system"
    assert output["write_cwd"] == "ok"
    assert output["no_new_privs"] == "1" and output["hostname"] == "outlast-task"
    messages = [e.message for e in client.run_events(handle.id) if e.kind == "status"]
    assert any("resumes on" in m for m in messages), messages
    sandboxes = forkserver_roots()
    assert sandboxes, "the fork server's /tmp is reachable through its /proc root"
    wait_for(lambda: not any((root / output["cwd"].lstrip("/")).exists() for root in sandboxes),
             message="the dumped process's working directory to be removed from its fork server's /tmp")


def forkserver_roots() -> list[Path]:
    """The roots of the isolated fork servers running on this host (ours among them)."""
    roots = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"outlast._zygote" in (proc / "cmdline").read_bytes() and (proc / "root/tmp/outlast-tasks").is_dir():
                roots.append(proc / "root")
        except OSError:
            continue
    return roots


@pytest.mark.parametrize(("mode", "said"), [("namespaces", "ok  isolation: namespaces: each version's fork server"),
                                            ("process", "ok  isolation: process (OUTLAST_ISOLATION): task processes "
                                                        "see this host's files")])
def test_doctor_reports_the_isolation_mode(monkeypatch, mode, said):
    monkeypatch.setenv("OUTLAST_ISOLATION", mode)
    result = CliRunner().invoke(app, ["doctor"])
    assert said in result.output
    assert "mount, IPC and UTS namespaces available" in result.output


def test_doctor_names_the_valid_modes_of_a_wrong_one(monkeypatch):
    monkeypatch.setenv("OUTLAST_ISOLATION", "container")
    result = CliRunner().invoke(app, ["doctor"])
    assert "isolation: OUTLAST_ISOLATION must be one of namespaces, process, not 'container'" in result.output


def test_a_run_checkpointed_before_its_runtime_was_killed_resumes_in_the_next_one(tmp_path):
    """The restored task lands in its image's namespace: it must still find the new supervisor's socket."""
    runtime = runtime_process(tmp_path, None, project="isolation", slots=1, extra_env=ENV).start()
    try:
        client = runtime.client()
        database = data_dir(runtime) / "outlast.db"
        handle = client.trigger("isolated-wait", {"text": "across a restart", "seconds": 8, "read": [str(database)]})
        wait_for(lambda: any("checkpointed" in e.message for e in client.run_events(handle.id)
                             if e.kind == "status"), timeout=60, message="the waiting run to be checkpointed")
        runtime.kill()
        runtime.start()
        run = finished(client, handle.id)
        assert run.status is RunStatus.COMPLETED, run.error
        assert run.attempts == 1, "resumed from its checkpoint, not started again"
        assert run.output["counter"] == 42 and run.output["tmp"] == "across a restart"
        assert run.output["read"] == {str(database): "No such file or directory"}
        assert run.output["write_code"] == "Read-only file system"
    finally:
        runtime.close()
