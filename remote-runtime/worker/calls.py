"""Wait calls: a task's `wait.*` and token calls, done through the backend and answered, and the
waitpoints that complete meanwhile, handed to the processes waiting for them in memory."""

from __future__ import annotations

import dataclasses
import time

from outlast.wire import (
    Call,
    Reply,
    Resolved,
    StreamWrite,
    TaskRunError,
    WaitpointKind,
    WaitpointResult,
    WaitRequest,
)

from .attempts import Attempts, Execution
from .backend import WorkerBackend
from .background import Background
from .processes import TaskProcess
from .suspension import Suspension


@dataclasses.dataclass(eq=False)
class WaitCalls:
    """Calls from task processes, answered through the backend; completed waitpoints, handed in."""

    backend: WorkerBackend
    attempts: Attempts
    suspension: Suspension
    background: Background

    async def answer(self, process: TaskProcess, call: Call) -> None:
        """Do what a task asked through the runtime, and answer it (unless it is being suspended:
        it asks again after its restore, and the runtime treats the repeat as the same call)."""
        execution = process.execution
        if execution is None:
            return
        key = f"{process.process_id}-{call.call_id}"
        try:
            reply = await self._do(execution, call, key)
        except Exception as exc:
            detail = exc.response.text if hasattr(exc, "response") else str(exc)
            reply = Reply(call_id=call.call_id, ok=False, error=TaskRunError(type=type(exc).__name__, message=detail))
        process.send(reply)

    async def _do(self, execution: Execution, call: Call, key: str) -> Reply:
        context = execution.context
        if call.op == "wait" and call.wait is not None:
            states = await self.backend.wait(WaitRequest(
                node_id=self.backend.node_id, run_id=context.run_id, attempt=context.attempt, key=key,
                spec=call.wait))
            pending = [state.id for state in states if state.result is None]
            if pending:
                execution.waiting.update(pending)
                # A long sleep has a known end: no point holding it in memory first.
                delay = 0.0 if call.wait.kind is WaitpointKind.DATETIME else execution.checkpoint_after
                due = time.monotonic() + delay
                execution.suspend_at = min(execution.suspend_at or due, due)
                execution.changed.set()
            return Reply(call_id=call.call_id, waitpoints=states)
        if call.op == "token" and call.token is not None:
            token = await self.backend.token(call.token.model_copy(update={"run_id": context.run_id, "key": key}))
            return Reply(call_id=call.call_id, token=token)
        if call.op == "stream" and call.stream is not None:
            written = await self.backend.stream(StreamWrite(run_id=context.run_id, attempt=context.attempt,
                                                            append=call.stream))
            return Reply(call_id=call.call_id, stream=written)
        raise ValueError(f"unknown call {call.op!r}")

    def deliver(self, results: list[WaitpointResult]) -> None:
        """Waitpoints completed: hand them to the processes waiting in memory (parked ones all at once)."""
        for execution in list(self.attempts.executions.values()):
            mine = [r for r in results if r.id in execution.waiting]
            if not mine or execution.process is None:
                continue
            execution.waiting -= {r.id for r in mine}
            if execution.parked:
                execution.held_results += mine
                if not execution.waiting:
                    self.background.start(self.suspension.unpark(execution))
                continue
            if not execution.waiting:
                execution.suspend_at = None
            execution.process.send(Resolved(results=mine))
            execution.changed.set()
