"""A checkpointed run costs its node nothing once its process is gone: the supervisor keeps no record
of it (its row in the database is all there is), and what the checkpoint's put freed goes back to the
OS rather than staying in the runtime's malloc arenas. Real CRIU, real task process, in-memory backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from outlast.runtime.checkpoint import checkpointer
from outlast.wire import CheckpointMode
from tests.unit.memory_backend import MemoryBackend
from tests.unit.test_supervisor import eventually, run, scratch, supervisor  # noqa: F401 (scratch: a fixture)


def test_a_checkpointed_run_leaves_nothing_behind_in_the_supervisor(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    backend = MemoryBackend()
    trims: list[None] = []
    release = checkpointer.release_freed_memory
    monkeypatch.setattr(checkpointer, "release_freed_memory", lambda: trims.append(release()))

    async def scenario() -> None:
        async with supervisor(backend, tmp_path, project="waits", checkpoints="auto") as node:
            if node.checkpoint_problem:
                pytest.skip(f"no CRIU here: {node.checkpoint_problem}")
            run_id = backend.enqueue("short-wait", {"seconds": 600})  # a long sleep: checkpointed at once
            suspend = await eventually(lambda: backend.suspends and backend.suspends[0], "the suspension")
            assert suspend.mode is CheckpointMode.CRIU, suspend.detail
            process_id = suspend.detail["process_id"]
            await eventually(lambda: process_id not in node.pool.processes, "its process forgotten once gone")
            assert run_id not in node.attempts.executions
            assert not node.attempts.backlog and node.attempts.running == 0
            assert all(p.execution is None or p.execution.context.run_id != run_id
                       for p in [*node.pool.processes.values(), *node.pool.idle])
            assert trims, "the put's freed buffers are handed back to the OS"

    run(scenario)
