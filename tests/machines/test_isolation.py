"""Isolation of task processes (OUTLAST_ISOLATION=namespaces) on a real runtime with real task
processes and real CRIU: each version's fork server runs in its own mount, IPC and UTS namespaces
where the runtime's data directory is hidden, the root and the code are read-only and /tmp is
private; a waiting run is checkpointed and restored with its state and its sandbox."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from outlast import InvalidRequestError, RunStatus, task
from outlast.cli import app
from outlast.runtime.checkpoint import criu
from outlast.runtime.worker import cgroups
from outlast.runtime.worker.isolation import Plan, checkpointable_from, network_from, task_uid
from tests.conftest import RuntimeProcess, runtime_process, wait_for
from tests.e2e._shared import process_gone

ENV = {"OUTLAST_ISOLATION": "namespaces", "OUTLAST_CHECKPOINT_AFTER": "1"}
FORKSERVER_MEMORY_MB = 768
pytestmark = pytest.mark.skipif(not criu.check().available, reason="needs CRIU")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    root = tmp_path_factory.mktemp("isolation")  # shared with tasks, its data directory inside hidden still
    started = runtime_process(root, None, project="isolation", slots=2,
                              extra_env={**ENV, "OUTLAST_ISOLATION_SHARE": str(root),
                                         "OUTLAST_FORKSERVER_MEMORY_MB": str(FORKSERVER_MEMORY_MB)})
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


NO_CAPABILITIES = "0000000000000000"
SYS_ADMIN_ONLY = "0000000000200000"  # kept for CRIU's parasite; seccomp denies what it would allow
CAPABILITIES = {"CapEff": SYS_ADMIN_ONLY, "CapPrm": SYS_ADMIN_ONLY, "CapBnd": SYS_ADMIN_ONLY,
                "CapAmb": NO_CAPABILITIES, "CapInh": NO_CAPABILITIES}


def escape_payload(runtime: RuntimeProcess) -> dict:
    block = next((d for d in ("/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/xvda") if Path(d).exists()), "/dev/vda")
    memory = cgroups.detect()[0]["memory"]
    return {"runtime_pid": runtime.process.pid, "block_device": block,
            "cgroup_procs": str(memory.path(memory.own) / "cgroup.procs")}


def test_a_task_has_no_capabilities_and_cannot_mount_ptrace_or_touch_the_kernel(runtime, client):
    output = completed(client, "escape", escape_payload(runtime))
    assert output["uid"] == task_uid("auto")[0]
    assert output["capabilities"] == CAPABILITIES
    assert output["no_new_privs"] == "1" and output["seccomp"] == "2"
    assert output["mount"] == "Operation not permitted"
    assert output["user_namespace"] == "Operation not permitted"
    assert output["runtime_memory"] == "Permission denied", "ptrace access to the runtime"
    assert output["kcore"] in ("ok: 0 bytes", "No such file or directory"), "masked (this VM's kernel has none)"
    assert output["keys"] == "ok: 0 bytes", "masked"
    assert output["sysctl"] == "Read-only file system"
    assert output["sysrq"] in ("Read-only file system", "No such file or directory"), "(none on this VM)"
    assert output["cgroup_escape"] == "Read-only file system", "its own limits are root's files"
    assert output["sys"] == "Read-only file system"
    assert output["null"] == "ok"


@pytest.mark.skipif("devices" not in cgroups.detect()[0], reason="devices are filtered with cgroup v1 only")
def test_a_task_cannot_open_a_block_device(runtime, client):
    payload = escape_payload(runtime)
    assert Path(payload["block_device"]).exists(), "the host has the disk (else the test proves nothing)"
    assert completed(client, "escape", payload)["block_device"] == "Operation not permitted"


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the host"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def local_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


def test_outbound_http_works(client, local_server):
    output = completed(client, "fetch", {"url": local_server})
    assert output == {"status": 200, "body": "hello from the host"}


def test_a_task_declared_without_network_reaches_nothing_and_keeps_none_across_a_checkpoint(client, local_server):
    """`@task(network=False)` in a project whose other tasks have the host's network: its processes
    are kept apart from theirs both ways, and its checkpointed process comes back without network."""
    refused = completed(client, "offline-reach", {"url": local_server})
    assert refused["interfaces"] == ["lo"] and "Connection refused" in refused["fetched"], refused
    allowed = completed(client, "reach", {"url": local_server})  # not offline-reach's idle process
    assert allowed["fetched"] == "status 200" and allowed["interfaces"] != ["lo"], allowed
    handle = client.trigger("offline-wait", {"url": local_server, "seconds": 6})
    wait_for(lambda: any("checkpointed" in e.message for e in client.run_events(handle.id) if e.kind == "status"),
             timeout=60, message="the waiting run without network to be checkpointed")
    run = finished(client, handle.id)
    assert run.status is RunStatus.COMPLETED, run.error
    assert process_gone(run.output["host_pid_before"]), "the process that waited was dumped, not kept"
    for seen in (run.output["before"], run.output["after"]):
        assert seen["interfaces"] == ["lo"] and "Connection refused" in seen["fetched"], run.output
    again = completed(client, "reach", {"url": local_server})  # the restored process is not given it
    assert again["fetched"] == "status 200", again


def test_a_fork_server_is_confined_too_in_a_cgroup_of_its_own_with_no_new_privs(runtime, client):
    completed(client, "probe", {})  # its fork server has started
    servers = [proc for proc in Path("/proc").glob("[0-9]*") if _is_forkserver_of(proc, runtime.process.pid)]
    assert servers, "the runtime's fork server"
    for server in servers:
        status = dict(line.split(":\t", 1) for line in (server / "status").read_text().splitlines() if ":\t" in line)
        assert status["NoNewPrivs"].strip() == "1"
        memory = next((line.split(":", 2)[2] for line in (server / "cgroup").read_text().splitlines()
                       if line.split(":")[1] == "memory"), None)
        if memory is None:  # a cgroup v2 host: the unified hierarchy
            continue
        assert memory != _memory_cgroup(runtime.process.pid), "not its runtime's cgroup"
        limit = Path("/sys/fs/cgroup/memory", memory.lstrip("/"), "memory.limit_in_bytes").read_text()
        assert int(limit) == FORKSERVER_MEMORY_MB * 2**20


def _is_forkserver_of(proc: Path, runtime_pid: int) -> bool:
    """Its tasks are the runtime's children with its command line too, but each in a PID namespace."""
    try:
        status = {line.split(":")[0]: line.split()[1:] for line in (proc / "status").read_text().splitlines()}
        return (status["PPid"] == [str(runtime_pid)] and len(status["NSpid"]) == 1
                and b"outlast._zygote" in (proc / "cmdline").read_bytes())
    except (OSError, KeyError):
        return False


def _memory_cgroup(pid: int) -> str:
    return next(line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                if line.split(":")[1] == "memory")


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
    assert output["capabilities"] == CAPABILITIES and output["seccomp"] == "2", "restored as confined as it was"
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
    assert "ok  seccomp: libseccomp found" in result.output
    assert f"ok  task uid: {task_uid('auto')[0]} (auto: " in result.output
    assert "ok  task capabilities: CAP_SYS_ADMIN only, for CRIU's parasite" in result.output
    assert "ok  task network: the host's (outbound allowed" in result.output


def test_doctor_names_a_wrong_task_setting(monkeypatch):
    monkeypatch.setenv("OUTLAST_TASK_NETWORK", "off")
    result = CliRunner().invoke(app, ["doctor"])
    assert "task network: OUTLAST_TASK_NETWORK must be one of host, loopback, not 'off'" in result.output


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


def test_loopback_only_tasks_reach_nothing_outside_and_are_checkpointed_with_their_network(tmp_path, local_server):
    """OUTLAST_TASK_NETWORK=loopback: each task process in a network namespace of its own with only `lo`."""
    runtime = runtime_process(tmp_path, None, project="isolation", slots=1,
                              extra_env={**ENV, "OUTLAST_TASK_NETWORK": "loopback"}).start()
    try:
        client = runtime.client()
        run = finished(client, client.trigger("fetch", {"url": local_server}).id)
        assert run.status is RunStatus.FAILED
        assert "Connection refused" in run.error.message or "unreachable" in run.error.message, run.error
        output = completed(client, "loopback", {})
        assert output == {"interfaces": ["lo"], "echo": "own loopback"}
        check_a_checkpointed_run(client, data_dir(runtime) / "outlast.db")
    finally:
        runtime.close()


def test_a_task_declared_without_network_has_none_in_process_mode_too(tmp_path, local_server):
    """Without isolation the fork server still forks it into a network namespace of its own."""
    runtime = runtime_process(tmp_path, None, project="isolation", slots=1).start()
    try:
        client = runtime.client()
        refused = completed(client, "offline-reach", {"url": local_server})
        assert refused["interfaces"] == ["lo"] and "Connection refused" in refused["fetched"], refused
        assert completed(client, "reach", {"url": local_server})["fetched"] == "status 200"
    finally:
        runtime.close()


def test_without_capabilities_and_as_nobody_a_task_reads_no_process_of_the_host(tmp_path):
    """OUTLAST_TASK_UID=65534 OUTLAST_TASK_CAPABILITIES=none: the strictest setting (its tasks cannot be
    checkpointed: a wait keeps the process, and the run still completes)."""
    runtime = runtime_process(tmp_path, None, project="isolation", slots=1, extra_env={
        **ENV, "OUTLAST_TASK_UID": "65534", "OUTLAST_TASK_CAPABILITIES": "none"}).start()
    try:
        client = runtime.client()
        output = completed(client, "escape", escape_payload(runtime))
        assert output["uid"] == 65534
        assert output["capabilities"] == dict.fromkeys(CAPABILITIES, NO_CAPABILITIES)
        assert output["runtime_environment"] == "Permission denied", "the runtime's environment holds its keys"
        assert output["runtime_memory"] == "Permission denied"
        assert output["mount"] == "Operation not permitted"
        assert output["write_cwd"] == "ok", "its working directory is its own"
        waited = completed(client, "isolated-wait", {"text": "kept", "seconds": 2})
        assert waited["counter"] == 42 and waited["tmp"] == "kept"
    finally:
        runtime.close()


@pytest.mark.parametrize(("parse", "value", "said"), [
    (task_uid, "nobody", "OUTLAST_TASK_UID must be auto or a uid (a whole number), not 'nobody'"),
    (network_from, "none", "OUTLAST_TASK_NETWORK must be one of host, loopback, not 'none'"),
    (checkpointable_from, "all", "OUTLAST_TASK_CAPABILITIES must be one of checkpoint, none, not 'all'")])
def test_a_wrong_task_setting_is_refused_naming_it_and_its_choices(parse, value, said):
    with pytest.raises(ValueError) as refused:
        parse(value)
    assert str(refused.value) == said


def test_a_task_process_started_from_scratch_is_confined_before_it_runs(tmp_path):
    """Where a version's fork server cannot import, its task processes start from scratch through the
    same wrapper: confined (and here without network) before the interpreter runs any task code."""
    probe = ("import os, socket; s = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines()"
             " if ':\\t' in l); print(s['CapEff'].strip(), s['Seccomp'].strip(), s['NoNewPrivs'].strip(),"
             " sorted(n for _, n in socket.if_nameindex()), os.access('/usr', os.W_OK))")
    # The interpreter kept visible as the pool keeps it (a virtualenv under /tmp is under the new /tmp).
    plan = Plan(hidden=[str(tmp_path / "data")], read_only=[sys.prefix], network=False)
    (tmp_path / "data").mkdir()
    done = subprocess.run(plan.command([sys.executable, "-c", probe]), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [SYS_ADMIN_ONLY, "2", "1", "['lo']", "False"]


PROJECT_DIR = str(Path(__file__).parent.parent / "projects" / "isolation")


@pytest.mark.parametrize(("command", "setting", "value"), [
    (["runtime"], "OUTLAST_ISOLATION", "container"),
    (["runtime"], "OUTLAST_TASK_UID", "nobody"),
    (["runtime"], "OUTLAST_FORKSERVER_MEMORY_MB", "lots"),
    (["dev", "--project", PROJECT_DIR], "OUTLAST_TASK_CAPABILITIES", "all"),
    (["worker", "--api-url", "http://127.0.0.1:9", "--secret-key", "sk", "--deployments"], "OUTLAST_TASK_NETWORK",
     "none")])
def test_a_wrong_setting_stops_a_runtime_or_worker_as_it_starts(monkeypatch, tmp_path, command, setting, value):
    """Before anything starts (the refusal's wording: test_a_wrong_task_setting_is_refused_naming_it...)."""
    monkeypatch.setenv(setting, value)
    result = CliRunner().invoke(app, [*command, "--data-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {setting} must be ") and f"not {value!r}" in result.output
    assert not (tmp_path / "outlast.db").exists(), "refused before the runtime opened its store"


def test_a_bad_network_option_is_refused_where_the_task_is_declared():
    with pytest.raises(InvalidRequestError) as refused:
        @task(id="bad-network", network="none")
        def bad(payload: dict) -> None:  # pragma: no cover - never declared
            pass
    assert refused.value.field == "network" and "invalid network" in str(refused.value)
