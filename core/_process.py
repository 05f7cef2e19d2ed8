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
import socket
import sys
import threading
import time
import traceback
from typing import Any, TextIO

from pydantic import TypeAdapter

from . import _context
from ._errors import AbortTaskRunError
from ._framing import FrameSocket
from ._offload import resolve_payload
from ._tasks import registered_tasks
from .wire import (
    Heartbeat,
    Hello,
    Log,
    LogRecord,
    Metadata,
    MetadataUpdate,
    Result,
    Shutdown,
    StartAttempt,
    TaskRunError,
    to_task_process,
)

_json = TypeAdapter(Any)


class _Channel:
    """The task side of the control channel."""

    def __init__(self, frames: FrameSocket) -> None:
        self.frames = frames

    def send_log(self, record: LogRecord) -> None:
        self.frames.send(Log(record=record))

    def send_metadata(self, update: MetadataUpdate) -> None:
        self.frames.send(Metadata(update=update))


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


class _Heartbeat(threading.Thread):
    def __init__(self, frames: FrameSocket, interval: float, grace: float) -> None:
        super().__init__(name="outlast-heartbeat", daemon=True)
        self.frames = frames
        self.interval = interval
        self.grace = grace
        self.run_id: str | None = None
        self._wake = threading.Event()

    def run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            run_id = self.run_id
            if run_id is not None:
                try:
                    self.frames.send(Heartbeat(run_id=run_id))
                except OSError:
                    self._supervisor_lost()
                    return

    def _supervisor_lost(self) -> None:
        """The supervisor died mid-attempt: the runtime will retry the run elsewhere, so stop this attempt
        as a cancel would (SIGTERM, the task's `finally` blocks run), and exit for good after the grace."""
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(self.grace)
        os._exit(1)


def import_tasks(modules: list[str]) -> None:
    """Import each module, and every submodule of a package, so their `@task`s register."""
    for name in modules:
        module = importlib.import_module(name)
        if hasattr(module, "__path__"):
            for info in pkgutil.walk_packages(module.__path__, prefix=name + "."):
                importlib.import_module(info.name)


def _error(exc: BaseException) -> TaskRunError:
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    return TaskRunError(type=name, message=str(exc), stack="".join(traceback.format_exception(exc)))


class TaskProcess:
    def __init__(self, frames: FrameSocket, heartbeat_interval: float, grace: float = 5.0) -> None:
        self.frames = frames
        self.channel = _Channel(frames)
        self.heartbeat = _Heartbeat(frames, heartbeat_interval, grace)
        self.loop = asyncio.new_event_loop()
        self.streams = [_TimelineStream(sys.stdout, "info"), _TimelineStream(sys.stderr, "error")]
        sys.stdout, sys.stderr = self.streams  # type: ignore[assignment]
        root = logging.getLogger()
        root.addHandler(_TimelineLogHandler())
        if root.level == logging.WARNING and not root.handlers[:-1]:
            root.setLevel(logging.INFO)  # unconfigured logging: let logging.info() reach the timeline too

    def serve(self) -> None:
        self.heartbeat.start()
        while True:
            message = self.frames.recv(to_task_process)
            if message is None or isinstance(message, Shutdown):
                return
            self.frames.send(self.run_attempt(message))

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
        _context.bind(context, self.channel)
        self.heartbeat.run_id = context.run_id
        try:
            payload = declared.prepare_payload(resolve_payload(start.payload))  # S3-offloaded: fetched
            output = declared(payload, context)
            if asyncio.iscoroutine(output):
                output = self._run_coroutine(output)
            output = _json.dump_python(output, mode="json")
            return Result(run_id=context.run_id, attempt=context.attempt, ok=True, output=output)
        except Exception as exc:
            return Result(run_id=context.run_id, attempt=context.attempt, ok=False, error=_error(exc),
                          retryable=not isinstance(exc, AbortTaskRunError))
        finally:
            for stream in self.streams:
                stream.end_attempt()
            self.heartbeat.run_id = None
            _context.unbind()


def _terminate(signum: int, frame: Any) -> None:
    # Unwinds the running task so its `finally` blocks run before the process exits.
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    project_dir = os.environ["OUTLAST_PROJECT_DIR"]
    sys.path.insert(0, project_dir)
    os.chdir(project_dir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ["OUTLAST_CONTROL_SOCKET"])
    frames = FrameSocket(sock)
    hello = Hello(process_id=os.environ["OUTLAST_PROCESS_ID"], pid=os.getpid())
    try:
        import_tasks([m for m in os.environ.get("OUTLAST_TASK_MODULES", "tasks").split(",") if m])
    except BaseException as exc:
        hello.import_error = "".join(traceback.format_exception(exc))
        frames.send(hello)
        sys.exit(3)
    hello.tasks = [t.manifest for t in registered_tasks().values()]
    frames.send(hello)
    TaskProcess(frames, float(os.environ.get("OUTLAST_HEARTBEAT_INTERVAL", "2")),
                float(os.environ.get("OUTLAST_CANCEL_GRACE", "5"))).serve()


if __name__ == "__main__":
    main()
