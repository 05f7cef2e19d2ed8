"""The worker supervisor: N slots, warm task processes, and the control channel to them.

It claims attempts from its backend, hands each to a warm task process of the current
version over a Unix socket, relays the process's logs and metadata, and reports the outcome.
Every attempt runs in a task process, never in the supervisor's own process. A process that
finished an attempt normally is reused for the next attempt of the same version.

Waits: a task's `wait.*` calls come in over the same socket. Waitpoints that complete while
the process waits in memory are handed in as they complete. A wait still pending after the
task's `checkpoint_after` seconds suspends the process: checkpointed with CRIU and gone (the
run is WAITING, the slot free), or, where CRIU cannot run, parked alive outside the slots.
A claimed run that carries a checkpoint is restored instead of started.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from outlast._channel import RESUME_SIGNAL
from outlast._framing import read_frame, write_frame
from outlast._project import Project
from outlast.wire import (
    Assignment,
    AttemptCompletion,
    AttemptOutcome,
    Call,
    CheckpointMode,
    Heartbeat,
    Hello,
    LeasedAttempt,
    Log,
    Metadata,
    Reply,
    Resolved,
    Result,
    Resumed,
    StartAttempt,
    Suspend,
    Suspended,
    SuspendRequest,
    TaskManifest,
    TaskRunError,
    WaitpointKind,
    WaitpointResult,
    WaitRequest,
    WorkerReport,
    to_supervisor,
)

from ..checkpoint.checkpointer import Checkpointer
from ..settings import RuntimeSettings
from .backend import WorkerBackend
from .forkserver import ForkServer, ForkServerFailed
from .forkserver import supported as forkserver_supported
from .processes import (
    PidProcess,
    ProcessExited,
    SpawnOptions,
    TaskProcess,
    describe_exit,
    spawn,
    task_environment,
)

log = logging.getLogger("outlast.supervisor")
PREFETCH_MULTIPLIER = 4
PREFETCH_BELOW_SECONDS = 0.05
FLUSH_COALESCE_SECONDS = 0.003
WAIT_POLL_SECONDS = 0.2  # how often waitpoints awaited in memory are checked
SUSPEND_ACK_SECONDS = 10.0
RESUME_ACK_SECONDS = 30.0


class TasksImportFailed(Exception):
    """The project's tasks could not be imported."""


class RestoreFailed(Exception):
    """A checkpointed run could not be brought back; it starts a fresh attempt."""


class Execution:
    def __init__(self, assignment: Assignment) -> None:
        self.assignment = assignment
        self.context = assignment.context
        self.started = time.monotonic()
        self.stop_reason: str | None = None  # set when the runtime asked us to stop it
        self.process: TaskProcess | None = None
        self.checkpoint_after = 5.0
        self.waiting: set[str] = set()  # waitpoints the task waits for
        self.suspend_at: float | None = None  # monotonic time at which a still-pending wait suspends it
        self.changed = asyncio.Event()  # wakes the attempt's loop: a wait began or ended
        self.parked_since: float | None = None  # kept alive outside the slots while it waits
        self.parked_seconds = 0.0
        self.held_results: list[WaitpointResult] = []  # completed while parked, handed in on resume

    @property
    def leased(self) -> LeasedAttempt:
        return LeasedAttempt(run_id=self.context.run_id, attempt=self.context.attempt, waiting=sorted(self.waiting))

    @property
    def parked(self) -> bool:
        return self.parked_since is not None

    def active_seconds(self) -> float:
        """Time this attempt spent running here: parked waits do not count (nor against max_duration)."""
        parked = self.parked_seconds + (time.monotonic() - self.parked_since if self.parked_since else 0.0)
        return time.monotonic() - self.started - parked

    def remaining_seconds(self) -> float | None:
        if self.context.max_duration is None:
            return None
        return self.context.max_duration - self.assignment.execution_ms / 1000 - self.active_seconds()


class Supervisor:
    def __init__(self, backend: WorkerBackend, project: Project | None, settings: RuntimeSettings) -> None:
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
        self._process_added = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._pending = WorkerReport()
        self._stopping = False
        self.checkpointer: Checkpointer | None = None
        self.checkpoint_problem = ""  # why waits are kept in memory here, when they are
        self.forkservers: dict[str, asyncio.Future[ForkServer]] = {}  # per version: task processes fork from it
        self.manifests: dict[str, list[TaskManifest]] = {}  # per version, as its first process declared them

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._on_connection, path=str(self.socket_path))
        self.checkpointer, self.checkpoint_problem = await Checkpointer.detect(self.settings)
        if self.checkpointer is None:
            log.warning("waiting runs stay in memory on this node, NOT checkpointed: %s", self.checkpoint_problem)
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
        self.manifests[version] = hello.tasks
        previous, self.version = self.version, version
        if previous and previous != version:
            self._close_forkserver(previous)
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
        for version in list(self.forkservers):
            self._close_forkserver(version)
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._server is not None:
            self._server.close()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    # --- processes -----------------------------------------------------------------------

    def _in_background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _spawn(self, version: str) -> TaskProcess:
        options = SpawnOptions(
            socket_path=self.socket_path, heartbeat_interval=self.settings.heartbeat_interval,
            cancel_grace=self.settings.cancel_grace, checkpoint_after=self.settings.checkpoint_after,
            process_dir=self.settings.process_dir if self.checkpointer is not None else None)
        project, python = await self._project_for(version)
        if python is not None:
            options = dataclasses.replace(options, python=python)
        forkserver = await self._forkserver(version, project, options)
        return self._track(await spawn(project, version, options, forkserver))

    async def _forkserver(self, version: str, project: Project, options: SpawnOptions) -> ForkServer | None:
        """The version's fork server, started on first use; None where there is none (its import failing
        included: a process started from scratch then reports the error the usual way)."""
        if not forkserver_supported():
            return None
        starting = self.forkservers.get(version)
        if starting is None:
            starting = self.forkservers[version] = asyncio.ensure_future(ForkServer.start(
                task_environment(project, options), project.root, options.python))
        try:
            return await asyncio.shield(starting)
        except ForkServerFailed:
            if self.forkservers.get(version) is starting:
                del self.forkservers[version]
            return None

    def _close_forkserver(self, version: str) -> None:
        starting = self.forkservers.pop(version, None)
        if starting is not None and starting.done() and not starting.exception():
            self._in_background(starting.result().close())

    # Where the code of a version is. Overridden by the supervisor of deployed versions (deployed.py),
    # which runs several versions at once, each from its own directory and virtualenv.

    async def _project_for(self, version: str) -> tuple[Project, str | None]:
        """The project a process of `version` runs, and its interpreter (None: this one)."""
        assert self.project is not None
        return self.project, None

    def _version_to_run(self, execution: Execution) -> str:
        """The version whose process runs a claimed attempt (a working copy runs its latest code)."""
        return self.version

    def _reusable(self, process: TaskProcess) -> bool:
        """Whether a process that finished an attempt goes back to the idle pool."""
        return process.version == self.version

    def _track(self, process: TaskProcess) -> TaskProcess:
        self.processes[process.process_id] = process
        self._process_added.set()
        self._in_background(self._reap(process))
        return process

    async def _lookup(self, process_id: str) -> TaskProcess | None:
        """A process that just connected; a forked one can say hello before its fork call has returned here."""
        deadline = time.monotonic() + 10
        while (process := self.processes.get(process_id)) is None and time.monotonic() < deadline:
            self._process_added.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._process_added.wait(), 0.5)
        return process

    async def _reap(self, process: TaskProcess) -> None:
        returncode = await process.popen.wait()
        process.gone(describe_exit(returncode))
        self.processes.pop(process.process_id, None)
        if process in self.idle:
            self.idle.remove(process)
        if self.checkpointer is not None and process.namespaced and not process.checkpointed:
            self.checkpointer.forget_process(process.process_id)
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

    async def _take_process(self, version: str | None = None) -> TaskProcess:
        version = version or self.version
        while self.idle:
            process = self.idle.pop()
            if not process.alive:
                continue
            if not self._reusable(process):
                process.retired = True
                self._in_background(process.shutdown())
            elif process.version == version:
                return process
            else:
                self.idle.insert(0, process)  # another version's: leave it for that version's runs
                if all(p.version != version for p in self.idle):
                    break
        process = await self._spawn(version)
        await asyncio.wait_for(process.ready, 120)
        return process

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await read_frame(reader, to_supervisor)
        process = await self._lookup(first.process_id) if isinstance(first, Hello | Resumed) else None
        if process is None or (isinstance(first, Resumed) and process.resumed is None):
            writer.close()
            return
        process.writer = writer
        if isinstance(first, Hello):
            process.hello = first
            if not process.ready.done():
                process.ready.set_result(first)
        elif not process.resumed.done():
            process.resumed.set_result(first)
        while (message := await read_frame(reader, to_supervisor)) is not None:
            process.last_seen = time.monotonic()
            if isinstance(message, Result):
                if process.result is not None and not process.result.done():
                    process.result.set_result(message)
            elif isinstance(message, Log):
                self._pending.logs.append(message.record)
            elif isinstance(message, Metadata):
                self._pending.metadata.append(message.update)
            elif isinstance(message, Call):
                self._in_background(self._answer(process, message))
            elif isinstance(message, Suspended):
                if process.suspended is not None and not process.suspended.done():
                    process.suspended.set_result(message)
            elif isinstance(message, Heartbeat):
                pass
        writer.close()
        if process.suspended is not None:
            return  # it closed the connection to be checkpointed
        with contextlib.suppress(TimeoutError):  # wait for the exit status: it says why (signal, code)
            await asyncio.wait_for(process.popen.wait(), 2.0)
        process.gone(describe_exit(process.popen.returncode))

    # --- attempts ------------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Attempts that hold a slot: not queued in the backlog, not parked in a wait."""
        return len(self.executions) - len(self.backlog) - sum(e.parked for e in self.executions.values())

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
            capacity = self._prefetch_limit() - self.running - len(self.backlog)  # parked waits hold no slot
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
        suspended = False
        try:
            if execution.assignment.resume is not None:
                process = execution.process = await self._restore(execution)
            else:
                process = execution.process = await self._take_process(self._version_to_run(execution))
                process.last_seen = time.monotonic()
                process.execution = execution
                execution.checkpoint_after = self._checkpoint_after(process, context.task)
                # ctx.version names the code that actually runs the attempt (the run may not be locked to one).
                started = context.model_copy(update={"version": process.version})
                process.start(StartAttempt(context=started, payload=execution.assignment.payload))
            try:
                answer = await self._until_answer(execution, process)
            except TimeoutError:
                await process.terminate(self.settings.cancel_grace)
                outcome = AttemptOutcome.TIMED_OUT
                error = TaskRunError(type="MaxDurationExceeded",
                                     message=f"run exceeded its max_duration of {context.max_duration:g}s")
            else:
                if answer is None:
                    suspended = True
                    return
                outcome = AttemptOutcome.OK if answer.ok else AttemptOutcome.ERROR
                output, error, retryable = answer.output, answer.error, answer.retryable
        except ProcessExited as exc:
            reason = execution.stop_reason or str(exc)
            error = TaskRunError(type="TaskProcessCrashed", message=reason)
        except RestoreFailed as exc:
            error = TaskRunError(type="RestoreFailed", message=str(exc))
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
                process.execution = None
                # Warm processes are kept up to one per slot: restored ones would otherwise pile up.
                if process.checkpointed:
                    pass
                elif (process.alive and self._reusable(process) and not process.retired
                      and len(self.idle) < self.slots):
                    self.idle.append(process)
                elif process.alive:
                    self._in_background(process.shutdown())
            if not suspended:
                self._report_completion(execution, outcome, output, error, retryable)

    def _report_completion(self, execution: Execution, outcome: AttemptOutcome, output: Any,
                           error: TaskRunError | None, retryable: bool) -> None:
        seconds = execution.active_seconds()
        self._recent_seconds = seconds if self._recent_seconds is None else 0.8 * self._recent_seconds + 0.2 * seconds
        self._pending.completions.append(AttemptCompletion(
            run_id=execution.context.run_id, attempt=execution.context.attempt, outcome=outcome, output=output,
            error=error, retryable=retryable, duration_ms=int(seconds * 1000)))
        self._flush_now.set()

    async def _until_answer(self, execution: Execution, process: TaskProcess) -> Result | None:
        """The attempt's result; None once it is checkpointed and gone. TimeoutError past max_duration.

        Meanwhile, a wait still pending at its `suspend_at` suspends the process.
        """
        result = process.result
        assert result is not None
        while True:
            execution.changed.clear()
            deadlines = []
            remaining = execution.remaining_seconds()
            if remaining is not None and not execution.parked:
                deadlines.append(remaining)
            if execution.suspend_at is not None and not execution.parked:
                deadlines.append(execution.suspend_at - time.monotonic())
            changed = asyncio.ensure_future(execution.changed.wait())
            await asyncio.wait({result, changed}, timeout=max(0.0, min(deadlines)) if deadlines else None,
                               return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            if result.done():
                return result.result()
            if execution.parked:
                continue
            remaining = execution.remaining_seconds()
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            if execution.suspend_at is not None and time.monotonic() >= execution.suspend_at:
                execution.suspend_at = None
                if execution.waiting and await self._suspend(execution, process):
                    return None

    # --- waits ---------------------------------------------------------------------------

    def _checkpoint_after(self, process: TaskProcess, task_id: str) -> float:
        known = process.tasks or self.manifests.get(process.version, [])  # a restored process said no hello
        manifest = next((t for t in known if t.id == task_id), None)
        if manifest is not None and manifest.checkpoint_after is not None:
            return manifest.checkpoint_after
        return self.settings.checkpoint_after

    async def _answer(self, process: TaskProcess, call: Call) -> None:
        """Do what a task asked through the runtime, and answer it (unless it is being suspended:
        it asks again after its restore, and the runtime treats the repeat as the same call)."""
        execution = process.execution
        if execution is None:
            return
        context, key = execution.context, f"{process.process_id}-{call.call_id}"
        try:
            if call.op == "wait" and call.wait is not None:
                states = await self.backend.wait(WaitRequest(
                    node_id=self.backend.node_id, run_id=context.run_id, attempt=context.attempt, key=key,
                    spec=call.wait))
                reply = Reply(call_id=call.call_id, waitpoints=states)
                pending = [state.id for state in states if state.result is None]
                if pending:
                    execution.waiting.update(pending)
                    # A long sleep has a known end: no point holding it in memory first.
                    delay = 0.0 if call.wait.kind is WaitpointKind.DATETIME else execution.checkpoint_after
                    due = time.monotonic() + delay
                    execution.suspend_at = min(execution.suspend_at or due, due)
                    execution.changed.set()
            elif call.op == "token" and call.token is not None:
                token = await self.backend.token(call.token.model_copy(update={"run_id": context.run_id,
                                                                               "key": key}))
                reply = Reply(call_id=call.call_id, token=token)
            else:
                raise ValueError(f"unknown call {call.op!r}")
        except Exception as exc:
            detail = exc.response.text if hasattr(exc, "response") else str(exc)
            reply = Reply(call_id=call.call_id, ok=False, error=TaskRunError(type=type(exc).__name__, message=detail))
        self._send(process, reply)

    @staticmethod
    def _send(process: TaskProcess, message: Any) -> None:
        if process.suspended is None and process.writer is not None and not process.writer.is_closing():
            write_frame(process.writer, message)

    def _deliver(self, results: list[WaitpointResult]) -> None:
        """Waitpoints completed: hand them to the processes waiting in memory (parked ones all at once)."""
        for execution in list(self.executions.values()):
            mine = [r for r in results if r.id in execution.waiting]
            if not mine or execution.process is None:
                continue
            execution.waiting -= {r.id for r in mine}
            if execution.parked:
                execution.held_results += mine
                if not execution.waiting:
                    self._in_background(self._unpark(execution))
                continue
            if not execution.waiting:
                execution.suspend_at = None
            self._send(execution.process, Resolved(results=mine))
            execution.changed.set()

    async def _suspend(self, execution: Execution, process: TaskProcess) -> bool:
        """Checkpoint the waiting process and let its slot go; True once it is gone. Where it cannot be
        checkpointed it is parked alive instead (False: the attempt goes on in memory)."""
        if self.checkpointer is None or not process.namespaced:
            await self._park(execution, self.checkpoint_problem or "the task process cannot be checkpointed")
            return False
        context = execution.context
        began = time.perf_counter()
        process.suspended = asyncio.get_running_loop().create_future()
        try:
            write_frame(process.writer, Suspend())
            await asyncio.wait_for(asyncio.shield(process.suspended), SUSPEND_ACK_SECONDS)
        except (TimeoutError, ConnectionError) as exc:
            process.suspended = None
            await self._park(execution, f"the task process did not get ready for its checkpoint: {exc!r}")
            return False
        key = f"{context.run_id}/{context.attempt}-{uuid.uuid4().hex[:12]}"
        process.checkpointed = True  # criu ends it: its exit is expected now
        try:
            detail = await asyncio.to_thread(self.checkpointer.dump, process.pid, key, process.process_id)
        except Exception as exc:
            process.checkpointed = False
            log.warning("checkpoint of %s failed: %s", context.run_id, exc)
            await self._reconnect(process)  # criu leaves a process it could not dump running
            await self._park(execution, f"its checkpoint failed: {exc}")
            return False
        detail["suspend_ms"] = round((time.perf_counter() - began) * 1000, 1)
        detail["version"] = process.version
        request = SuspendRequest(node_id=self.backend.node_id, run_id=context.run_id, attempt=context.attempt,
                                 mode=CheckpointMode.CRIU, waiting=sorted(execution.waiting), image_key=key,
                                 detail=detail, duration_ms=int(execution.active_seconds() * 1000))
        try:
            await self.backend.suspend(request)
        except Exception as exc:  # canceled meanwhile (or the runtime is gone): nobody will restore it
            log.warning("run %s was checkpointed but not suspended (%s); its image is dropped", context.run_id, exc)
            await asyncio.to_thread(self.checkpointer.delete, key)
            execution.stop_reason = f"could not hand the checkpoint to the runtime: {exc}"
        return True

    async def _reconnect(self, process: TaskProcess) -> None:
        """Wake a process that closed its connection for a checkpoint that did not happen."""
        process.suspended = None
        if not process.alive or self.checkpointer is None:
            return
        process.resumed = asyncio.get_running_loop().create_future()
        self.checkpointer.write_resume_file(process.process_id, self.socket_path)
        process.popen.send_signal(RESUME_SIGNAL)
        with contextlib.suppress(TimeoutError, ProcessExited):
            await asyncio.wait_for(process.resumed, RESUME_ACK_SECONDS)
        process.resumed = None

    async def _park(self, execution: Execution, reason: str) -> None:
        """Keep the waiting process alive outside the slots; the run is WAITING but not checkpointed."""
        context = execution.context
        request = SuspendRequest(node_id=self.backend.node_id, run_id=context.run_id, attempt=context.attempt,
                                 mode=CheckpointMode.KEPT_ALIVE, waiting=sorted(execution.waiting),
                                 detail={"reason": reason}, duration_ms=int(execution.active_seconds() * 1000))
        try:
            await self.backend.suspend(request)
        except Exception as exc:
            log.warning("run %s could not be parked (%s); it waits in its slot", context.run_id, exc)
            return
        execution.parked_since = time.monotonic()
        self._slot_freed.set()

    async def _unpark(self, execution: Execution) -> None:
        context = execution.context
        try:
            await self.backend.resume(context.run_id, context.attempt)
        except Exception as exc:
            log.warning("run %s could not resume in memory: %s", context.run_id, exc)
            return
        execution.parked_seconds += time.monotonic() - (execution.parked_since or time.monotonic())
        execution.parked_since = None
        results, execution.held_results = execution.held_results, []
        if execution.process is not None:
            self._send(execution.process, Resolved(results=results))
        execution.changed.set()

    async def _restore(self, execution: Execution) -> TaskProcess:
        """Bring a checkpointed attempt back: fetch and restore its image, reconnect, hand in the results."""
        resume = execution.assignment.resume
        assert resume is not None
        if resume.mode is not CheckpointMode.CRIU or not resume.image_key:
            raise RestoreFailed(f"nothing to restore ({resume.mode} checkpoint on another node)")
        if self.checkpointer is None:
            raise RestoreFailed(f"this node cannot restore checkpoints: {self.checkpoint_problem}")
        process_id = str(resume.detail.get("process_id", ""))
        loop = asyncio.get_running_loop()
        try:
            pid = await asyncio.to_thread(self.checkpointer.restore, resume.image_key, process_id, self.socket_path)
        except Exception as exc:
            await asyncio.to_thread(self.checkpointer.delete, resume.image_key)
            raise RestoreFailed(f"could not restore its checkpoint: {exc}") from None
        ready: asyncio.Future[Hello] = loop.create_future()
        process = TaskProcess(process_id=process_id, version=str(resume.detail.get("version", "")),
                              popen=PidProcess(pid), ready=ready, namespaced=True)
        ready.set_result(Hello(process_id=process_id, pid=pid))
        process.resumed, process.result, process.execution = loop.create_future(), loop.create_future(), execution
        self._track(process)
        try:
            process.popen.send_signal(RESUME_SIGNAL)
            resumed = await asyncio.wait_for(asyncio.shield(process.resumed), RESUME_ACK_SECONDS)
        except (TimeoutError, ProcessExited, ProcessLookupError) as exc:
            process.kill()
            raise RestoreFailed(f"the restored process did not reconnect: {exc!r}") from None
        finally:
            self._in_background(asyncio.to_thread(self.checkpointer.delete, resume.image_key))
        process.resumed = None
        execution.checkpoint_after = self._checkpoint_after(process, execution.context.task)
        results = [r for r in resume.results if r.id in resumed.waiting]
        execution.waiting = set(resumed.waiting) - {r.id for r in results}
        if execution.waiting:  # still waiting for some (asked for after the checkpoint): poll, then suspend again
            execution.suspend_at = time.monotonic() + execution.checkpoint_after
        if results:
            self._send(process, Resolved(results=results))
        return process

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
        """Renew the leases of running attempts; stop those the runtime says are over (canceled); hand
        in the waitpoints that completed (checked more often while some task waits in memory)."""
        interval = min(1.0, self.settings.lease_seconds / 3)
        last = time.monotonic()
        while True:
            await asyncio.sleep(WAIT_POLL_SECONDS)
            executions = list(self.executions.values())
            if not executions or (time.monotonic() - last < interval and not any(e.waiting for e in executions)):
                continue
            last = time.monotonic()
            try:
                response = await self.backend.heartbeat([e.leased for e in executions])
            except Exception as exc:
                log.warning("lease renewal failed: %s", exc)
                continue
            if response.completed:
                self._deliver(response.completed)
            for run_id in response.stop:
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
