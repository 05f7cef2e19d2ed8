"""The worker supervisor: N slots, warm task processes, and the control channel to them.

It claims attempts from its backend, hands each to a warm task process of the current
version over a Unix socket, relays the process's logs and metadata, and reports the outcome.
Every attempt runs in a task process, never in the supervisor's own process. A process that
finished an attempt normally is reused for the next attempt of the same version.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from outlast._framing import read_frame
from outlast._project import Project
from outlast.wire import (
    Assignment,
    AttemptCompletion,
    AttemptOutcome,
    Heartbeat,
    Hello,
    LeasedAttempt,
    Log,
    Metadata,
    Result,
    StartAttempt,
    TaskRunError,
    WorkerReport,
    to_supervisor,
)

from .backend import WorkerBackend
from .processes import ProcessExited, TaskProcess, describe_exit, spawn
from .settings import RuntimeSettings

log = logging.getLogger("outlast.supervisor")
PREFETCH_MULTIPLIER = 4
PREFETCH_BELOW_SECONDS = 0.05
FLUSH_COALESCE_SECONDS = 0.003


class TasksImportFailed(Exception):
    """The project's tasks could not be imported."""


class Execution:
    def __init__(self, assignment: Assignment) -> None:
        self.assignment = assignment
        self.context = assignment.context
        self.started = time.monotonic()
        self.stop_reason: str | None = None  # set when the runtime asked us to stop it
        self.process: TaskProcess | None = None

    @property
    def leased(self) -> LeasedAttempt:
        return LeasedAttempt(run_id=self.context.run_id, attempt=self.context.attempt)

    def remaining_seconds(self) -> float | None:
        if self.context.max_duration is None:
            return None
        return self.context.max_duration - self.assignment.execution_ms / 1000


class Supervisor:
    def __init__(self, backend: WorkerBackend, project: Project, settings: RuntimeSettings) -> None:
        self.backend = backend
        self.project = project
        self.settings = settings
        self.slots = settings.slots
        self.version = ""
        self.processes: dict[str, TaskProcess] = {}
        self.idle: list[TaskProcess] = []
        self.executions: dict[str, Execution] = {}  # every attempt this node holds a lease on
        self.backlog: collections.deque[Execution] = collections.deque()  # claimed, waiting for a slot
        self._recent_seconds: float | None = None  # moving average of attempt durations
        self._socket_dir = Path(tempfile.mkdtemp(prefix="outlast-"))  # short: AF_UNIX paths max 108 bytes
        self.socket_path = self._socket_dir / "control.sock"
        self._server: asyncio.AbstractServer | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._attempts: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()  # referenced, so the loop cannot drop them
        self._slot_freed = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._pending = WorkerReport()
        self._stopping = False

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._on_connection, path=str(self.socket_path))
        await self.load_version()
        self._loops = [asyncio.create_task(coro) for coro in (
            self._dispatch_loop(), self._lease_loop(), self._flush_loop(), self._watchdog_loop())]

    async def load_version(self) -> list[str]:
        """Import the project in a fresh process, register its tasks, and make it the current version.

        Raises TasksImportFailed with the traceback when the import fails; the previous version stays.
        """
        version = self.project.content_version()
        process = await self._spawn(version)
        try:
            hello = await asyncio.wait_for(process.ready, 120)
        except (ProcessExited, TimeoutError) as exc:
            process.kill()
            raise TasksImportFailed(f"task process did not start: {exc}") from None
        if hello.import_error:
            raise TasksImportFailed(hello.import_error)
        await self.backend.register(version, hello.tasks)
        previous, self.version = self.version, version
        if previous and previous != version:
            for old in list(self.idle):
                if old.version != version:
                    self.idle.remove(old)
                    old.retired = True
                    self._in_background(old.shutdown())
        self.idle.append(process)
        self._fill_pool()
        return [t.id for t in hello.tasks]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._loops:
            task.cancel()
        for execution in self.backlog:  # claimed ahead, never started: give them back at once
            self._pending.completions.append(AttemptCompletion(
                run_id=execution.context.run_id, attempt=execution.context.attempt,
                outcome=AttemptOutcome.RELEASED))
        self.backlog.clear()
        for task in list(self._attempts):
            task.cancel()
        await asyncio.gather(*self._loops, *self._attempts, return_exceptions=True)
        await self._flush()
        await asyncio.gather(*(p.shutdown(self.settings.cancel_grace) for p in self.processes.values()),
                             return_exceptions=True)
        if self._server is not None:
            self._server.close()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    # --- processes -----------------------------------------------------------------------

    def _in_background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _spawn(self, version: str) -> TaskProcess:
        process = await spawn(self.project, version, self.socket_path, self.settings.heartbeat_interval,
                              self.settings.cancel_grace)
        self.processes[process.process_id] = process
        self._in_background(self._reap(process))
        return process

    async def _reap(self, process: TaskProcess) -> None:
        returncode = await process.popen.wait()
        process.gone(describe_exit(returncode))
        self.processes.pop(process.process_id, None)
        if process in self.idle:
            self.idle.remove(process)
        if not self._stopping:
            self._fill_pool()

    def _fill_pool(self) -> None:
        """Keep one warm process per slot, so a claimed attempt never waits for imports."""
        if self._stopping:
            return
        current = [p for p in self.processes.values() if p.version == self.version and not p.retired]
        for _ in range(self.slots - len(current)):
            self._in_background(self._warm())

    async def _warm(self) -> None:
        process = await self._spawn(self.version)
        try:
            await asyncio.wait_for(process.ready, 120)
        except (ProcessExited, TimeoutError):
            process.kill()
            return
        if process.version == self.version and process.alive:
            self.idle.append(process)
            self._slot_freed.set()

    async def _take_process(self) -> TaskProcess:
        while self.idle:
            process = self.idle.pop()
            if process.alive and process.version == self.version:
                return process
        process = await self._spawn(self.version)
        await asyncio.wait_for(process.ready, 120)
        return process

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello = await read_frame(reader, to_supervisor)
        if not isinstance(hello, Hello) or hello.process_id not in self.processes:
            writer.close()
            return
        process = self.processes[hello.process_id]
        process.writer, process.hello = writer, hello
        if not process.ready.done():
            process.ready.set_result(hello)
        while (message := await read_frame(reader, to_supervisor)) is not None:
            process.last_seen = time.monotonic()
            if isinstance(message, Result):
                if process.result is not None and not process.result.done():
                    process.result.set_result(message)
            elif isinstance(message, Log):
                self._pending.logs.append(message.record)
            elif isinstance(message, Metadata):
                self._pending.metadata.append(message.update)
            elif isinstance(message, Heartbeat):
                pass
        writer.close()
        with contextlib.suppress(TimeoutError):  # wait for the exit status: it says why (signal, code)
            await asyncio.wait_for(process.popen.wait(), 2.0)
        process.gone(describe_exit(process.popen.returncode))

    # --- attempts ------------------------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self.executions) - len(self.backlog)

    def _prefetch_limit(self) -> int:
        """How many attempts to hold at once. Like Celery's prefetch, claiming a few ahead spreads one
        claim transaction over several runs; only done while attempts are short, so a node never sits
        on long runs that another node could start now."""
        short = self._recent_seconds is not None and self._recent_seconds < PREFETCH_BELOW_SECONDS
        return self.slots * PREFETCH_MULTIPLIER if short else self.slots

    async def _dispatch_loop(self) -> None:
        while True:
            self._slot_freed.clear()  # before looking at the slots, so no wake-up between is lost
            self._start_backlog()
            capacity = self._prefetch_limit() - len(self.executions)
            # With every slot busy, top the backlog up only once it runs low, so that each claim
            # takes several runs at once.
            if capacity <= 0 or len(self.backlog) >= self.slots:
                await self._slot_freed.wait()
                continue
            busy = self.running >= self.slots or self.backlog
            try:
                # With a slot idle, long-poll for new work; with all busy, only top up the backlog.
                assignments = await self.backend.claim(capacity, wait=0 if busy else self.settings.poll_interval)
            except Exception as exc:  # the runtime may be restarting; keep trying
                log.warning("claim failed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            for assignment in assignments:
                execution = Execution(assignment)
                self.executions[execution.context.run_id] = execution
                self.backlog.append(execution)
            if busy and not assignments:
                await self._slot_freed.wait()

    def _start_backlog(self) -> None:
        while self.backlog and self.running < self.slots:
            execution = self.backlog.popleft()
            execution.started = time.monotonic()
            task = asyncio.create_task(self._execute(execution))
            self._attempts.add(task)
            task.add_done_callback(self._attempts.discard)

    async def _execute(self, execution: Execution) -> None:
        context = execution.context
        outcome, output, error, retryable = AttemptOutcome.CRASHED, None, None, True
        process: TaskProcess | None = None
        try:
            process = execution.process = await self._take_process()
            process.last_seen = time.monotonic()
            # ctx.version names the code that actually runs the attempt (the run may not be locked to one).
            started = context.model_copy(update={"version": process.version})
            result = process.start(StartAttempt(context=started, payload=execution.assignment.payload))
            try:
                answer = await asyncio.wait_for(result, execution.remaining_seconds())
            except TimeoutError:
                await process.terminate(self.settings.cancel_grace)
                outcome = AttemptOutcome.TIMED_OUT
                error = TaskRunError(type="MaxDurationExceeded",
                                     message=f"run exceeded its max_duration of {context.max_duration:g}s")
            else:
                outcome = AttemptOutcome.OK if answer.ok else AttemptOutcome.ERROR
                output, error, retryable = answer.output, answer.error, answer.retryable
        except ProcessExited as exc:
            reason = execution.stop_reason or str(exc)
            error = TaskRunError(type="TaskProcessCrashed", message=reason)
        except asyncio.CancelledError:
            if process is not None:
                await process.terminate(self.settings.cancel_grace)
            raise
        except Exception as exc:  # e.g. no process could be started: the attempt crashed, and is retried
            log.exception("attempt %s of %s failed in the supervisor", context.attempt, context.run_id)
            if process is not None:
                process.kill()
            error = TaskRunError(type="SupervisorError", message=f"{type(exc).__name__}: {exc}")
        finally:
            self.executions.pop(context.run_id, None)
            self._slot_freed.set()
            if process is not None:
                process.result = None
                if process.alive and process.version == self.version and not process.retired:
                    self.idle.append(process)
                elif process.alive:
                    self._in_background(process.shutdown())
        seconds = time.monotonic() - execution.started
        self._recent_seconds = seconds if self._recent_seconds is None else 0.8 * self._recent_seconds + 0.2 * seconds
        duration_ms = int(seconds * 1000)
        self._pending.completions.append(AttemptCompletion(
            run_id=context.run_id, attempt=context.attempt, outcome=outcome, output=output, error=error,
            retryable=retryable, duration_ms=duration_ms))
        self._flush_now.set()

    # --- background loops ----------------------------------------------------------------

    async def _flush(self) -> None:
        report, self._pending = self._pending, WorkerReport()
        if report.logs or report.metadata or report.completions:
            try:
                await self.backend.report(report)
            except Exception as exc:
                log.warning("report failed, will retry: %s", exc)
                self._pending.logs[:0] = report.logs
                self._pending.metadata[:0] = report.metadata
                self._pending.completions[:0] = report.completions
                await asyncio.sleep(0.5)

    async def _flush_loop(self) -> None:
        while True:
            if self.running:
                await asyncio.sleep(FLUSH_COALESCE_SECONDS)  # gather the completions of several attempts
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), 0.1)
            self._flush_now.clear()
            await self._flush()

    async def _lease_loop(self) -> None:
        """Renew the leases of running attempts; stop those the runtime says are over (canceled)."""
        interval = min(1.0, self.settings.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            executions = list(self.executions.values())
            if not executions:
                continue
            try:
                stop = await self.backend.heartbeat([e.leased for e in executions])
            except Exception as exc:
                log.warning("lease renewal failed: %s", exc)
                continue
            for run_id in stop:
                execution = self.executions.get(run_id)
                if execution is not None and execution in self.backlog:  # canceled before it started
                    self.backlog.remove(execution)
                    del self.executions[run_id]
                    continue
                if execution is not None and execution.process is not None and execution.stop_reason is None:
                    execution.stop_reason = "run was canceled"
                    self._in_background(execution.process.terminate(self.settings.cancel_grace))

    async def _watchdog_loop(self) -> None:
        """A busy process that sends nothing for `heartbeat_timeout` seconds is treated as crashed."""
        while True:
            await asyncio.sleep(min(1.0, self.settings.heartbeat_timeout / 4))
            now = time.monotonic()
            for execution in list(self.executions.values()):
                process = execution.process
                if process is not None and process.alive and now - process.last_seen > self.settings.heartbeat_timeout:
                    execution.stop_reason = (f"task process sent no heartbeat for "
                                             f"{self.settings.heartbeat_timeout:g}s and was killed")
                    process.kill()
