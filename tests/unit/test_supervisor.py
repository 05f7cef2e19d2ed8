"""The worker supervisor against an in-memory backend: real task processes of a test project,
no runtime server, no database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from outlast._project import Project
from outlast.runtime.settings import RuntimeSettings
from outlast.runtime.worker.supervisor import Supervisor
from outlast.runtime.worker.versions import TasksImportFailed, WorkingCopy
from outlast.wire import AttemptOutcome, CheckpointMode, WaitpointKind, WaitpointResult
from tests.unit.memory_backend import MemoryBackend

PROJECTS = Path(__file__).resolve().parent.parent / "projects"


@pytest.fixture(autouse=True)
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTLAST_TEST_SCRATCH", str(tmp_path))
    monkeypatch.setenv("OUTLAST_TASK_PASS_ENV", "OUTLAST_TEST_SCRATCH")  # task processes see it only if named


def settings(tmp_path: Path, **overrides: Any) -> RuntimeSettings:
    # No CRIU here: a wait that outlasts checkpoint_after parks the process alive.
    values: dict[str, Any] = {"data_dir": tmp_path / "data", "slots": 1, "checkpoints": "off",
                              "poll_interval": 0.2, "lease_seconds": 1.5, "cancel_grace": 1.0,
                              "checkpoint_after": 0.2}
    return RuntimeSettings(**{**values, **overrides})


@asynccontextmanager
async def supervisor(backend: MemoryBackend, tmp_path: Path, project: str = "basic",
                     **overrides: Any) -> AsyncIterator[Supervisor]:
    node = Supervisor(backend, WorkingCopy(Project(PROJECTS / project), backend), settings(tmp_path, **overrides))
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def eventually(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return value


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def test_a_claimed_run_is_executed_and_reported_completed(tmp_path: Path) -> None:
    backend = MemoryBackend()

    async def scenario() -> None:
        async with supervisor(backend, tmp_path) as node:
            assert any(m.id == "echo" for m in backend.registered[node.code.version]), "its tasks are registered"
            run_id = backend.enqueue("echo", {"hello": "world"}, tags=["t"])
            completion = await eventually(lambda: backend.completions.get(run_id), "the completion")
        assert completion.outcome is AttemptOutcome.OK
        assert completion.output == {"payload": {"hello": "world"}, "run_id": run_id, "attempt": 1, "tags": ["t"]}
        assert completion.error is None

    run(scenario)


def test_a_failure_is_reported_with_its_error(tmp_path: Path) -> None:
    backend = MemoryBackend()

    async def scenario() -> None:
        async with supervisor(backend, tmp_path):
            failing, aborting = backend.enqueue("always-fails"), backend.enqueue("aborts")
            await eventually(lambda: failing in backend.completions and aborting in backend.completions,
                             "both completions")
        failed, aborted = backend.completions[failing], backend.completions[aborting]
        assert failed.outcome is AttemptOutcome.ERROR
        assert (failed.error.type, failed.error.message, failed.retryable) == ("RuntimeError", "boom", True)
        assert aborted.outcome is AttemptOutcome.ERROR
        assert aborted.retryable is False, "AbortTaskRunError is not retried"

    run(scenario)


def test_a_node_holds_no_more_runs_than_slots_while_attempts_are_long(tmp_path: Path) -> None:
    backend = MemoryBackend()

    async def scenario() -> None:
        async with supervisor(backend, tmp_path, slots=2):
            runs = [backend.enqueue("sleeper", {"seconds": 30}) for _ in range(5)]
            await eventually(lambda: len(backend.claimed) == 2, "two claimed runs")
            await asyncio.sleep(1.0)  # a few more rounds of the claim loop
            assert backend.claimed == runs[:2], "nothing claimed ahead"
            assert all(limit <= 2 for limit in backend.claims)

    run(scenario)


def test_short_attempts_are_claimed_ahead_and_stop_releases_the_unstarted(tmp_path: Path) -> None:
    backend = MemoryBackend()

    async def scenario() -> None:
        async with supervisor(backend, tmp_path) as node:
            node.attempts.recent_seconds = 0.001  # as if the attempts so far were short
            runs = [backend.enqueue("sleeper", {"seconds": 30}) for _ in range(6)]
            await eventually(lambda: len(backend.claimed) == 4, "four claimed runs")
            assert backend.claims == [4], "one claim for one slot and three ahead"
            await eventually(lambda: node.attempts.running == 1, "one running attempt")
        assert backend.claimed == runs[:4]
        outcomes = [backend.completions[r].outcome for r in runs[:4]]
        assert outcomes[0] is AttemptOutcome.CRASHED, "the running one is stopped with the node"
        assert outcomes[1:] == [AttemptOutcome.RELEASED] * 3, "the unstarted ones are given back"

    run(scenario)


def test_a_run_stopped_by_the_heartbeat_response_is_terminated(tmp_path: Path) -> None:
    backend = MemoryBackend()

    async def scenario() -> None:
        async with supervisor(backend, tmp_path) as node:
            run_id = backend.enqueue("sleeper", {"seconds": 60})
            await eventually(lambda: any(a.run_id == run_id for beat in backend.heartbeats for a in beat),
                             "a lease renewal of the run")
            started = time.monotonic()
            backend.stop.add(run_id)
            completion = await eventually(lambda: backend.completions.get(run_id), "the completion", 30)
            assert time.monotonic() - started < 10, "stopped, not run to its end"
            assert not node.attempts.executions, "the node holds no lease any more"
        assert completion.outcome is not AttemptOutcome.OK
        if completion.outcome is AttemptOutcome.CRASHED:
            assert completion.error.message == "run was canceled"
        assert (tmp_path / f"sleeper-{run_id}").read_text().split() == ["started", "cleanup"], \
            "SIGTERM: the task's finally block ran"

    run(scenario)


def test_a_wait_call_is_forwarded_to_the_backend_and_its_result_handed_in(tmp_path: Path) -> None:
    backend = MemoryBackend()

    async def scenario() -> None:
        async with supervisor(backend, tmp_path, project="waits") as node:
            run_id = backend.enqueue("short-wait", {"seconds": 600})
            request = await eventually(lambda: backend.waits and backend.waits[0], "the wait call")
            assert (request.run_id, request.attempt, request.node_id) == (run_id, 1, backend.node_id)
            assert request.spec.kind is WaitpointKind.DATETIME
            suspend = await eventually(lambda: backend.suspends and backend.suspends[0], "the suspension")
            assert suspend.mode is CheckpointMode.KEPT_ALIVE, "no CRIU here: parked alive"
            assert "switched off" in suspend.detail["reason"]
            waitpoint = suspend.waiting[0]
            await eventually(lambda: node.attempts.running == 0, "its slot given up while parked")
            backend.completed.append(WaitpointResult(id=waitpoint, kind=WaitpointKind.DATETIME))
            completion = await eventually(lambda: backend.completions.get(run_id), "the completion")
            assert backend.resumes == [(run_id, 1)], "unparked"
        assert completion.outcome is AttemptOutcome.OK
        assert isinstance(completion.output, float)

    run(scenario)


def test_loading_a_changed_working_copy_makes_it_the_current_version(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "tasks.py").write_text('from outlast import task\n\n@task(id="v")\ndef v(payload):\n    return 1\n')
    backend = MemoryBackend()

    async def scenario() -> None:
        node = Supervisor(backend, WorkingCopy(Project(project), backend), settings(tmp_path))
        await node.start()
        try:
            first = node.code.version
            (project / "tasks.py").write_text("raise ImportError('half-saved')\n")
            with pytest.raises(TasksImportFailed, match="half-saved"):
                await node.load_version()
            assert node.code.version == first, "a failed import leaves the version served"
            assert "half-saved" in "".join(backend.import_failures.values()), "the runtime is told why"
            (project / "tasks.py").write_text('from outlast import task\n\n@task(id="v")\ndef v(payload):\n'
                                              '    return 2\n')
            assert await node.load_version() == ["v"]
            assert node.code.version != first and set(backend.registered) == {first, node.code.version}
            run_id = backend.enqueue("v")
            completion = await eventually(lambda: backend.completions.get(run_id), "the completion")
            assert completion.output == 2, "the run gets the new code"
            await eventually(lambda: all(p.version != first for p in node.pool.processes.values()),
                             "the old version's processes retired")
        finally:
            await node.stop()

    run(scenario)
