"""A `WorkerBackend` held in memory: a queue of runs to claim and a record of what the supervisor
sent back, so the supervisor can be tested without a runtime process or a database."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from outlast.wire import (
    Assignment,
    AttemptCompletion,
    HeartbeatResponse,
    LeasedAttempt,
    LogRecord,
    RunContext,
    SuspendRequest,
    TaskManifest,
    TokenCall,
    WaitpointResult,
    WaitpointState,
    WaitRequest,
    WaitToken,
    WorkerReport,
)

_numbers = itertools.count(1)


class MemoryBackend:
    node_id = "memory-node"

    def __init__(self) -> None:
        self.registered: dict[str, list[TaskManifest]] = {}
        self.import_failures: dict[str, str] = {}  # version -> why it did not import
        self.queued: list[Assignment] = []
        self.claims: list[int] = []  # the limit of each claim that returned runs
        self.claimed: list[str] = []
        self.heartbeats: list[list[LeasedAttempt]] = []
        self.completions: dict[str, AttemptCompletion] = {}
        self.logs: list[LogRecord] = []
        self.waits: list[WaitRequest] = []
        self.suspends: list[SuspendRequest] = []
        self.resumes: list[tuple[str, int]] = []
        self.stop: set[str] = set()  # run ids the next heartbeat response tells the node to stop
        self.completed: list[WaitpointResult] = []  # handed in by the next heartbeat response
        self._queue_changed = asyncio.Event()

    def enqueue(self, task: str, payload: Any = None, **context: Any) -> str:
        run_id = f"run_{next(_numbers)}"
        self.queued.append(Assignment(payload=payload, context=RunContext(
            run_id=run_id, attempt=1, task=task, env="dev", created_at=datetime.now(UTC), **context)))
        self._queue_changed.set()
        return run_id

    async def register(self, version: str, manifests: Sequence[TaskManifest]) -> None:
        self.registered[version] = list(manifests)

    async def import_failed(self, version: str, error: str) -> None:
        self.import_failures[version] = error

    async def claim(self, limit: int, wait: float) -> list[Assignment]:
        if not self.queued:
            self._queue_changed.clear()
            try:
                await asyncio.wait_for(self._queue_changed.wait(), wait)
            except TimeoutError:
                return []
        taken, self.queued = self.queued[:limit], self.queued[limit:]
        if taken:
            self.claims.append(limit)
            self.claimed += [a.context.run_id for a in taken]
        return taken

    async def heartbeat(self, attempts: Sequence[LeasedAttempt]) -> HeartbeatResponse:
        self.heartbeats.append(list(attempts))
        held = {a.run_id for a in attempts}
        stop, self.stop = sorted(self.stop & held), self.stop - held
        completed, self.completed = self.completed, []
        return HeartbeatResponse(stop=stop, completed=completed)

    async def report(self, report: WorkerReport) -> None:
        self.logs += report.logs
        for completion in report.completions:
            self.completions[completion.run_id] = completion

    async def wait(self, request: WaitRequest) -> list[WaitpointState]:
        self.waits.append(request)
        return [WaitpointState(id=f"wp_{request.run_id}_{request.key}")]  # pending until handed in

    async def suspend(self, request: SuspendRequest) -> bool:
        self.suspends.append(request)
        return True

    async def resume(self, run_id: str, attempt: int) -> None:
        self.resumes.append((run_id, attempt))

    async def token(self, call: TokenCall) -> WaitToken | None:
        return None
