"""Attempt execution: one claimed attempt, from taking (or restoring) its process to its outcome.

Every attempt runs in a task process, never in the supervisor's own. It ends in a result, an
error, a crash or a timeout past its max_duration, all reported; or in a suspension (checkpointed
and gone while it waits), which reports nothing: the runtime hears of the suspension itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from datetime import UTC, datetime
from typing import Any

from outlast.wire import AttemptCompletion, AttemptOutcome, LogRecord, Result, StartAttempt, TaskRunError

from ..settings import RuntimeSettings
from .attempts import Attempts, Execution
from .limits import MACHINE_TOO_LARGE, OUT_OF_MEMORY, carried, measure, out_of_memory_error
from .pool import MachineTooSmall, ProcessPool
from .processes import ProcessExited, TaskProcess
from .reports import ReportBuffer
from .suspension import CheckpointLost, RestoreFailed, Suspension

log = logging.getLogger("outlast.supervisor")


@dataclasses.dataclass(frozen=True)
class Ending:
    """How an attempt ended, as reported. The default is a crash the supervisor could not explain
    (it was stopped midway, say)."""

    outcome: AttemptOutcome = AttemptOutcome.CRASHED
    output: Any = None
    error: TaskRunError | None = None
    retryable: bool = True

    cpu_ms: int | None = None
    peak_memory_bytes: int | None = None

    @classmethod
    def crashed(cls, error_type: str, message: str) -> Ending:
        return cls(error=TaskRunError(type=error_type, message=message))

    @classmethod
    def refused(cls, error_type: str, message: str) -> Ending:
        """Not run at all, and no retry would run it (its machine preset cannot run on this node)."""
        return cls(AttemptOutcome.ERROR, error=TaskRunError(type=error_type, message=message), retryable=False)


@dataclasses.dataclass(eq=False)
class AttemptRunner:
    """Runs claimed attempts, each to its reported end (or its suspension)."""

    pool: ProcessPool
    suspension: Suspension
    attempts: Attempts
    reports: ReportBuffer
    settings: RuntimeSettings

    async def execute(self, execution: Execution) -> None:
        process: TaskProcess | None = None
        ending: Ending | None = Ending()  # None: suspended, nothing to report
        try:
            if (refusal := self._refusal(execution)) is not None:
                ending = refusal
                return
            if execution.assignment.resume is not None:
                process = execution.process = await self.suspension.restore(execution)
            else:
                process, execution.usage_start = await self.pool.take_sized(
                    self.pool.code.version_to_run(execution.context), execution.machine, execution.context.task)
                execution.process = process
                self._start(execution, process)
            ending = await self._ending(execution, process)
        except ProcessExited as exc:
            ending = Ending.crashed("TaskProcessCrashed", execution.stop_reason or str(exc))
        except MachineTooSmall as exc:
            assert execution.machine is not None
            ending = Ending.crashed(OUT_OF_MEMORY, f"a new task process already needs more memory than machine "
                                                   f"{execution.machine.describe()} allows: {exc}")
        except RestoreFailed as exc:
            ending = Ending.crashed("RestoreFailed", str(exc))
        except CheckpointLost as exc:
            ending = Ending.crashed("CheckpointLost", str(exc))
        except asyncio.CancelledError:
            process = execution.process or process
            if process is not None:
                await process.terminate(self.settings.cancel_grace)
            raise
        except Exception as exc:  # e.g. no process could be started: the attempt crashed, and is retried
            log.exception("attempt %s of %s failed in the supervisor", execution.context.attempt,
                          execution.context.run_id)
            if process is not None:
                process.kill()
            ending = Ending.crashed("SupervisorError", f"{type(exc).__name__}: {exc}")
        finally:
            self.attempts.finished(execution)
            process = execution.process or process  # a failed checkpoint may have restored it as another
            if ending is not None and process is not None:
                ending = self._measured(execution, process, ending)
            if process is not None:
                process.result = None
                process.execution = None
                self.pool.give_back(process)
            if ending is not None:
                self._report(execution, ending)

    def _refusal(self, execution: Execution) -> Ending | None:
        """The ending of an attempt whose machine preset this node does not know or cannot hold."""
        if execution.machine is None:
            return Ending.refused("UnknownMachine", f"unknown machine preset {execution.context.machine!r}")
        if (too_large := self.pool.limits.node.refuses(execution.machine)) is not None:
            return Ending.refused(MACHINE_TOO_LARGE, too_large)
        return None

    def _measured(self, execution: Execution, process: TaskProcess, ending: Ending) -> Ending:
        """`ending` with what the attempt used; an attempt its cgroup's OOM killer ended is out of memory."""
        measured = measure(execution.usage_start, self.pool.limits.usage(process.pid))
        if (measured is not None and measured.out_of_memory and ending.outcome is AttemptOutcome.CRASHED
                and execution.machine is not None and not execution.stop_reason):
            ending = dataclasses.replace(ending, error=out_of_memory_error(execution.machine, measured))
        used = carried(measured, execution.used_before)  # with what it used before a checkpoint
        return dataclasses.replace(ending, cpu_ms=used.get("cpu_ms"), peak_memory_bytes=used.get("peak_memory_bytes"))

    def _start(self, execution: Execution, process: TaskProcess) -> None:
        context = execution.context
        process.last_seen = time.monotonic()
        process.execution = execution
        execution.checkpoint_after = self.suspension.checkpoint_after(process, context.task)
        # ctx.version names the code that actually runs the attempt (the run may not be locked to one).
        started = context.model_copy(update={"version": process.version})
        process.start(StartAttempt(context=started, payload=execution.assignment.payload))

    async def _ending(self, execution: Execution, process: TaskProcess) -> Ending | None:
        try:
            answer = await self._until_answer(execution, process)
        except TimeoutError:
            await (execution.process or process).terminate(self.settings.cancel_grace)
            return Ending(AttemptOutcome.TIMED_OUT, error=TaskRunError(
                type="MaxDurationExceeded", message=f"run exceeded its max_duration of "
                                                    f"{execution.context.max_duration:g}s"))
        if answer is None:
            return None
        return Ending(AttemptOutcome.OK if answer.ok else AttemptOutcome.ERROR, answer.output, answer.error,
                      answer.retryable)

    async def _until_answer(self, execution: Execution, process: TaskProcess) -> Result | None:
        """The attempt's result; None once it is checkpointed and gone. TimeoutError past max_duration.

        Meanwhile, a wait still pending at its `suspend_at` suspends the process.
        """
        result = process.result
        assert result is not None
        while True:
            execution.changed.clear()
            changed = asyncio.ensure_future(execution.changed.wait())
            await asyncio.wait({result, changed}, timeout=execution.seconds_to_next_deadline(),
                               return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            if result.done():
                return result.result()
            if execution.parked:
                continue
            if execution.out_of_time():
                raise TimeoutError
            draining = execution.draining
            if draining or execution.suspension_due():
                if await self.suspension.suspend(execution, process):
                    return None
                if draining:  # not checkpointed: it goes on here until the node stops (and ends it)
                    execution.draining = False
                    self._not_drained(execution, process)
                if execution.process is not None and execution.process is not process:  # restored from its dump
                    process = execution.process
                    result = process.result
                    assert result is not None

    def _not_drained(self, execution: Execution, process: TaskProcess) -> None:
        """Say on the run's timeline why its draining node could not hand it over by checkpoint."""
        if process.result is None or process.result.done() or not process.alive:
            return  # it finished meanwhile
        checkpoints = self.suspension.checkpoints
        why = checkpoints.problem or ("this task process cannot be checkpointed" if not process.namespaced
                                      else "its checkpoint failed (the node's log says how)")
        context = execution.context
        self.reports.log(LogRecord(run_id=context.run_id, attempt=context.attempt, level="warn", time=datetime.now(UTC),
                                   message=f"its node is draining but could not move it by checkpoint: {why}; "
                                           "it is stopped with the node and retried"))

    def _report(self, execution: Execution, ending: Ending) -> None:
        seconds = execution.active_seconds()
        self.attempts.record_duration(seconds)
        self.reports.complete(AttemptCompletion(
            run_id=execution.context.run_id, attempt=execution.context.attempt, outcome=ending.outcome,
            output=ending.output, error=ending.error, retryable=ending.retryable, duration_ms=int(seconds * 1000),
            cpu_ms=ending.cpu_ms, peak_memory_bytes=ending.peak_memory_bytes))
