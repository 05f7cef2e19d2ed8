"""Task processes as the supervisor sees them: spawn, talk over the control socket, stop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from outlast._framing import write_frame
from outlast._project import Project
from outlast.wire import Hello, Result, Shutdown, StartAttempt, TaskManifest

# Variables a task process must never inherit from the runtime (its store, its own key).
_PRIVATE_VARIABLES = ("OUTLAST_DATABASE_URL", "OUTLAST_SECRET_KEY", "OUTLAST_DATA_DIR")
_counter = itertools.count(1)


class ProcessExited(Exception):
    """The task process ended (or stopped heartbeating) before answering."""


@dataclass
class TaskProcess:
    process_id: str
    version: str
    popen: asyncio.subprocess.Process
    ready: asyncio.Future[Hello]
    writer: asyncio.StreamWriter | None = None
    hello: Hello | None = None
    last_seen: float = field(default_factory=time.monotonic)
    result: asyncio.Future[Result] | None = None
    exit_reason: str | None = None
    retired: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.returncode is None and self.exit_reason is None

    @property
    def tasks(self) -> list[TaskManifest]:
        return self.hello.tasks if self.hello else []

    def start(self, message: StartAttempt) -> asyncio.Future[Result]:
        assert self.writer is not None
        self.result = asyncio.get_running_loop().create_future()
        write_frame(self.writer, message)
        return self.result

    def gone(self, reason: str) -> None:
        """Record why the process is gone and fail whatever waited on it."""
        if self.exit_reason is None:
            self.exit_reason = reason
        for future in (self.ready, self.result):
            if future is not None and not future.done():
                future.set_exception(ProcessExited(self.exit_reason))

    async def terminate(self, grace: float) -> None:
        """SIGTERM (the task's `finally` blocks run), then SIGKILL after `grace` seconds."""
        if self.popen.returncode is not None:
            return
        try:
            self.popen.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.popen.wait(), grace)
        except ProcessLookupError:
            return
        except TimeoutError:
            self.kill()
            await self.popen.wait()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()

    async def shutdown(self, grace: float = 5.0) -> None:
        if self.writer is not None and not self.writer.is_closing():
            try:
                write_frame(self.writer, Shutdown())
                await self.writer.drain()
            except ConnectionError:
                pass
        try:
            await asyncio.wait_for(self.popen.wait(), grace)
        except TimeoutError:
            await self.terminate(grace)


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "task process stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"task process was killed by {name}"
    return f"task process exited with code {returncode}"


async def spawn(project: Project, version: str, socket_path: Path, heartbeat_interval: float,
                cancel_grace: float = 5.0) -> TaskProcess:
    """Start `python -m outlast._process` for the project; it connects back and says hello."""
    process_id = f"p{os.getpid()}-{next(_counter)}"
    env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_VARIABLES}
    env.update(project.env)
    env.update({
        "OUTLAST_CONTROL_SOCKET": str(socket_path),
        "OUTLAST_PROCESS_ID": process_id,
        "OUTLAST_PROJECT_DIR": str(project.root),
        "OUTLAST_TASK_MODULES": ",".join(project.modules),
        "OUTLAST_HEARTBEAT_INTERVAL": str(heartbeat_interval),
        "OUTLAST_CANCEL_GRACE": str(cancel_grace),  # how long it unwinds if its supervisor dies mid-attempt
        "PYTHONUNBUFFERED": "1",
    })
    popen = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "outlast._process", env=env, cwd=str(project.root),
        stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
    )
    ready: asyncio.Future[Hello] = asyncio.get_running_loop().create_future()
    return TaskProcess(process_id=process_id, version=version, popen=popen, ready=ready)
