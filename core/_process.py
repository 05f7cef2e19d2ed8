"""The task process: imports a project's tasks, then runs attempts the supervisor sends it.

Started by a supervisor as `python -m outlast._process`; never imported by web apps. One
attempt runs at a time; the process may be reused for the next attempt of the same version.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
import logging
import os
import pkgutil
import signal
import sys
import time
import traceback
from typing import Any, TextIO

from pydantic import TypeAdapter

from . import _context, _hooks, _libraries
from ._channel import RESUME_SIGNAL, ControlChannel, HeartbeatThread, connect
from ._errors import AbortTaskRunError
from ._offload import resolve_payload
from ._tasks import registered_tasks
from .wire import (
    Hello,
    Result,
    Shutdown,
    StartAttempt,
    TaskRunError,
)

_json = TypeAdapter(Any)


class _TimelineStream(io.TextIOBase):
    """Replaces sys.stdout/stderr: each complete line also goes to the active run's timeline."""

    def __init__(self, original: TextIO, level: str) -> None:
        self.original = original
        self.level = level
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.original.write(text)
        if _context.current_run() is not None:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                _context.emit_log(self.level, line)
        return len(text)

    def flush(self) -> None:
        self.original.flush()

    def end_attempt(self) -> None:
        if self._pending:
            _context.emit_log(self.level, self._pending)
            self._pending = ""
        self.original.flush()


class _TimelineLogHandler(logging.Handler):
    """Standard `logging` records emitted during a run land in its timeline too."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "outlast.task" or _context.current_run() is None:
            return
        level = {"WARNING": "warn", "CRITICAL": "error"}.get(record.levelname, record.levelname.lower())
        _context.emit_log(level, self.format(record), {"logger": record.name})


def _supervisor_lost(grace: float) -> None:
    """The supervisor died mid-attempt: the runtime will retry the run elsewhere, so stop this attempt
    as a cancel would (SIGTERM, the task's `finally` blocks run), and exit for good after the grace."""
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace)
    os._exit(1)


def import_tasks(modules: list[str]) -> None:
    """Import each module, and every submodule of a package, so their `@task`s register."""
    for name in modules:
        module = importlib.import_module(name)
        if hasattr(module, "__path__"):
            for info in pkgutil.walk_packages(module.__path__, prefix=name + "."):
                importlib.import_module(info.name)


# Frames of the import machinery, not of the project: hidden from an import failure's traceback.
_MACHINERY = ("<frozen ", os.path.dirname(os.path.abspath(__file__)) + os.sep,
              os.path.dirname(importlib.__file__) + os.sep)


def describe_import_failure(exc: BaseException) -> str:
    """The project's traceback as a dev server prints it: the project's own frames and the error,
    without importlib's and outlast's frames around them."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
              if not frame.filename.startswith(_MACHINERY)]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)] if frames else []
    return "".join(lines + traceback.format_exception_only(exc)).rstrip("\n")


def _error(exc: BaseException) -> TaskRunError:
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    return TaskRunError(type=name, message=str(exc), stack="".join(traceback.format_exception(exc)))


class TaskProcess:
    def __init__(self, channel: ControlChannel, heartbeat_interval: float, checkpoint_after: float = 5.0) -> None:
        self.channel = channel
        self.heartbeat = HeartbeatThread(channel, heartbeat_interval)
        self.checkpoint_after = checkpoint_after
        self.loop = asyncio.new_event_loop()
        self.streams = [_TimelineStream(sys.stdout, "info"), _TimelineStream(sys.stderr, "error")]
        sys.stdout, sys.stderr = self.streams  # type: ignore[assignment]
        root = logging.getLogger()
        root.addHandler(_TimelineLogHandler())
        if root.level == logging.WARNING and not root.handlers[:-1]:
            root.setLevel(logging.INFO)  # unconfigured logging: let logging.info() reach the timeline too

    def serve(self) -> None:
        self.channel.start()
        self.heartbeat.start()
        while True:
            message = self.channel.inbox.get()
            if message is None or isinstance(message, Shutdown):
                return
            self.channel.send(self.run_attempt(message))

    def _run_coroutine(self, coroutine: Any) -> Any:
        task = self.loop.create_task(coroutine)
        try:
            return self.loop.run_until_complete(task)
        except BaseException:
            # SIGTERM (SystemExit) interrupted the loop while the task awaited: cancel the task and let it
            # unwind on the loop, so its `finally` blocks run, awaits included, before the process exits.
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    self.loop.run_until_complete(task)
            raise

    def run_attempt(self, start: StartAttempt) -> Result:
        context = start.context
        declared = registered_tasks().get(context.task)
        if declared is None:
            return Result(
                run_id=context.run_id, attempt=context.attempt, ok=False, retryable=False,
                error=TaskRunError(type="TaskNotFound", message=f"task {context.task!r} is not in this version"),
            )
        _context.bind(context, self.channel, declared.manifest.checkpoint_after or self.checkpoint_after)
        self.channel.run_id = context.run_id
        try:
            try:
                _hooks.begin_attempt()
                payload = declared.prepare_payload(resolve_payload(start.payload))  # S3-offloaded: fetched
                output = declared(payload, context)
                if asyncio.iscoroutine(output):
                    output = self._run_coroutine(output)
                output = _json.dump_python(output, mode="json")
            finally:
                hook_failure = _hooks.end_attempt()
            if hook_failure is not None:  # a resume hook raised and the task caught it: the attempt fails
                raise hook_failure
            return Result(run_id=context.run_id, attempt=context.attempt, ok=True, output=output)
        except Exception as exc:
            return Result(run_id=context.run_id, attempt=context.attempt, ok=False, error=_error(exc),
                          retryable=not isinstance(exc, AbortTaskRunError))
        finally:
            for stream in self.streams:
                stream.end_attempt()
            self.channel.run_id = None
            self.channel.end_attempt()
            _context.unbind()


def _terminate(signum: int, frame: Any) -> None:
    # Unwinds the running task so its `finally` blocks run before the process exits.
    raise SystemExit(128 + signum)


def prepare() -> None:
    """Import the project's tasks (a fork server does this once for every process it forks)."""
    project_dir = os.environ["OUTLAST_PROJECT_DIR"]
    sys.path.insert(0, project_dir)
    os.chdir(project_dir)
    _libraries.before_import()
    import_tasks([m for m in os.environ.get("OUTLAST_TASK_MODULES", "tasks").split(",") if m])
    _libraries.after_import()


def serve(import_error: str | None = None) -> None:
    """Connect to the supervisor, say hello (or why the tasks did not import), and run attempts."""
    signal.signal(signal.SIGTERM, _terminate)
    # Blocked in every thread (they inherit the mask): only the control thread's sigwait takes it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {RESUME_SIGNAL})
    frames = connect(os.environ["OUTLAST_CONTROL_SOCKET"])
    process_id = os.environ["OUTLAST_PROCESS_ID"]
    hello = Hello(process_id=process_id, pid=os.getpid(), import_error=import_error)
    if import_error:
        frames.send(hello)
        sys.exit(3)
    hello.tasks = [t.manifest for t in registered_tasks().values()]
    frames.send(hello)
    grace = float(os.environ.get("OUTLAST_CANCEL_GRACE", "5"))
    channel = ControlChannel(frames, process_id, os.environ.get("OUTLAST_RESUME_DIR"),
                             on_supervisor_lost=lambda: _supervisor_lost(grace))
    TaskProcess(channel, float(os.environ.get("OUTLAST_HEARTBEAT_INTERVAL", "2")),
                float(os.environ.get("OUTLAST_CHECKPOINT_AFTER", "5"))).serve()


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        prepare()
    except BaseException as exc:
        serve(describe_import_failure(exc))
    serve()


if __name__ == "__main__":
    main()
