"""Running tasks: sync and async functions, `ctx`, logs and metadata in the run, process isolation."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from outlast import RunStatus, trigger_options
from tests.conftest import SECRET_KEY, wait_for
from tests.e2e._shared import shared_runtime_fixture

# Tests that need no runtime of their own share one per store: `runtime` and `client` below.
shared_runtime = shared_runtime_fixture()


@pytest.fixture
def runtime(shared_runtime):
    return shared_runtime


@pytest.fixture
def client(shared_runtime):
    return shared_runtime.client()


def _task_versions(runtime) -> dict[str, str | None]:
    response = httpx.get(runtime.url + "/api/v1/tasks", headers={"Authorization": f"Bearer {SECRET_KEY}"})
    response.raise_for_status()
    return {task["id"]: task["version"] for task in response.json()}


def test_sync_and_async_tasks_receive_their_context(runtime, client):
    version = _task_versions(runtime)["whoami"]
    assert version
    for task_id in ("whoami", "whoami-async"):
        handle = client.trigger(task_id, {"n": 1}, trigger_options(tags=["alpha", "beta"]))
        run = client.poll(handle.id, timeout=30)
        assert run.status is RunStatus.COMPLETED, (task_id, run.error)
        assert run.attempts == 1
        ctx = run.output
        assert ctx["run_id"] == handle.id
        assert ctx["attempt"] == 1
        assert ctx["task"] == task_id
        assert ctx["tags"] == ["alpha", "beta"]
        assert ctx["env"] == "dev"
        assert ctx["version"] == version, "ctx.version must name the version running the attempt"


def test_sync_task_returns_its_output(client):
    run = client.poll(client.trigger("sync-echo", {"a": [1, 2]}).id, timeout=30)
    assert run.status is RunStatus.COMPLETED
    assert run.output == {"payload": {"a": [1, 2]}, "task": "sync-echo"}
    assert run.started_at is not None and run.completed_at is not None


def test_logs_prints_and_metadata_reach_the_run(client):
    run = client.poll(client.trigger("observed", {}).id, timeout=30)
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.metadata == {"stage": "one", "seen": ["a", "b"], "count": 3}

    logs = [e for e in client.run_events(run.id) if e.kind == "log"]
    printed = [e for e in logs if e.message == "printed line"]
    assert len(printed) == 1 and printed[0].level == "info" and printed[0].attempt == 1
    structured = [e for e in logs if e.message == "structured"]
    assert len(structured) == 1
    assert structured[0].level == "info"
    assert structured[0].data.get("answer") == 42


def test_metadata_and_logs_are_visible_while_the_run_executes(runtime, client):
    handle = client.trigger("gate", {"name": "live"})

    def waiting():
        run = client.retrieve_run(handle.id)
        return run if run.metadata.get("progress") == "waiting" else None

    run = wait_for(waiting, message="live metadata")
    assert run.status is RunStatus.EXECUTING
    wait_for(lambda: any(e.message == "waiting at the gate" for e in client.run_events(handle.id)),
             message="a log line while the run executes")

    (runtime.scratch / "open-live").touch()
    run = client.poll(handle.id, timeout=30)
    assert run.status is RunStatus.COMPLETED
    assert run.metadata == {"progress": "through"}


def test_metadata_from_the_trigger_is_visible_to_the_run(client):
    handle = client.trigger("observed", {}, trigger_options(metadata={"count": 10, "origin": "api"}))
    run = client.poll(handle.id, timeout=30)
    assert run.status is RunStatus.COMPLETED
    assert run.metadata == {"origin": "api", "stage": "one", "seen": ["a", "b"], "count": 13}


def test_each_attempt_runs_in_its_own_process_and_warm_processes_are_reused(make_runtime):
    runtime = make_runtime(slots=1)
    client = runtime.client()
    runtime_pid = runtime.process.pid
    first = client.poll(client.trigger("whoami", {}).id, timeout=30)
    second = client.poll(client.trigger("whoami-async", {}).id, timeout=30)
    assert first.status is second.status is RunStatus.COMPLETED
    assert first.output["pid"] != runtime_pid
    assert _parent(first.output["pid"]) == runtime_pid, "task processes are children of the runtime's supervisor"
    # A process that finished its attempt normally is warm: the next run of the version reuses it.
    assert second.output["pid"] == first.output["pid"]

    # A process that died is not reused: a fresh one takes its place.
    crashed = client.poll(client.trigger("crashes", {}, trigger_options(max_attempts=1)).id, timeout=30)
    assert crashed.status is RunStatus.CRASHED
    after = client.poll(client.trigger("whoami", {}).id, timeout=30)
    assert after.status is RunStatus.COMPLETED
    assert after.output["pid"] not in (first.output["pid"], runtime_pid)
    assert _parent(after.output["pid"]) == runtime_pid


def _parent(pid: int) -> int:
    """The host parent of a (still running) process, which may be PID 1 of its own PID namespace."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
