"""Task processes as the supervisor sees them: spawn, talk over the control socket, stop.

Where checkpointing works, a task process is spawned as PID 1 of its own PID namespace (so its
image restores on any node without PID clashes) and tracked through a pidfd; otherwise it is a
plain asyncio subprocess. Both look the same to the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from outlast._framing import write_frame
from outlast._project import Project
from outlast.wire import Hello, Result, Resumed, Shutdown, StartAttempt, Suspended, TaskManifest

from .forkserver import ForkServer, ForkServerFailed
from .host_environment import host_environment
from .isolation import Plan
from .pidns import spawn_in_pid_namespace

OUTPUT_FILE = "output.log"
log = logging.getLogger("outlast.supervisor")


class ProcessHandle(Protocol):
    """What asyncio.subprocess.Process offers, and PidProcess too."""

    pid: int
    returncode: int | None

    async def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


class PidProcess:
    """A child not started by asyncio (a namespace init, or a process criu restored), followed by pidfd."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._pidfd = os.pidfd_open(pid)
        self._loop.add_reader(self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        try:
            _, status = os.waitpid(self.pid, os.WNOHANG)
            self.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:  # reaped elsewhere (criu dump waits for what it killed)
            self.returncode = -signal.SIGKILL
        self._exited.set()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class NetworkUnavailable(Exception):
    """A task without network cannot be given a process here: nothing could take its network away."""


class ProcessExited(Exception):
    """The task process ended (or stopped heartbeating) before answering."""


@dataclass
class TaskProcess:
    process_id: str
    version: str
    popen: ProcessHandle
    ready: asyncio.Future[Hello]
    namespaced: bool = False  # PID 1 of its own PID namespace: it can be checkpointed
    writer: asyncio.StreamWriter | None = None
    hello: Hello | None = None
    last_seen: float = field(default_factory=time.monotonic)
    result: asyncio.Future[Result] | None = None
    exit_reason: str | None = None
    retired: bool = False
    checkpointed: bool = False  # dumped: its exit is expected and fails nothing
    suspended: asyncio.Future[Suspended] | None = None  # while it closes its connection for a dump
    resumed: asyncio.Future[Resumed] | None = None  # while it reconnects after a restore
    execution: Any = None  # the supervisor's record of the attempt it runs now
    origin: object = None  # what its version source started it from (see VersionSource.origin)
    network: bool | None = None  # made with the host's network (False: loopback only; None: not known yet)

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

    def send(self, message: Any) -> None:
        """Write a frame to it, unless it is being checkpointed (it asks again after its restore) or gone."""
        if self.suspended is None and self.writer is not None and not self.writer.is_closing():
            write_frame(self.writer, message)

    def gone(self, reason: str) -> None:
        """Record why the process is gone and fail whatever waited on it."""
        if self.exit_reason is None:
            self.exit_reason = reason
        if self.checkpointed:
            return
        for future in (self.ready, self.result, self.suspended, self.resumed):
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


@dataclass(frozen=True)
class SpawnOptions:
    socket_path: Path
    heartbeat_interval: float
    cancel_grace: float = 5.0
    checkpoint_after: float = 5.0
    process_dir: Path | None = None  # set: spawn in a PID namespace, ready to be checkpointed
    python: str | None = None  # the interpreter (a deployed version's virtualenv); default: this one
    cgroup_procs: tuple[str, ...] = ()  # cgroups a process started from scratch joins before it imports anything
    isolation: Plan | None = None  # set: a process started from scratch starts inside these namespaces too
    network: bool = True  # False: in a network namespace of its own with only loopback (a task's network=False)


def process_home(process_dir: Path, process_id: str) -> Path:
    """A task process's resume file and output; the same path wherever it is restored."""
    return process_dir / process_id


def task_environment(project: Project, options: SpawnOptions) -> dict[str, str]:
    """What every task process of the project gets (a fork server starts with it too): the allow-listed
    host variables (see host_environment), then its project's and environment's own, then the protocol's."""
    env = host_environment()
    env.update(project.env)
    env.update({
        "OUTLAST_CONTROL_SOCKET": str(options.socket_path),
        "OUTLAST_PROJECT_DIR": str(project.root),
        "OUTLAST_TASK_MODULES": ",".join(project.modules),
        "OUTLAST_HEARTBEAT_INTERVAL": str(options.heartbeat_interval),
        "OUTLAST_CANCEL_GRACE": str(options.cancel_grace),  # how long it unwinds if its supervisor dies mid-attempt
        "OUTLAST_CHECKPOINT_AFTER": str(options.checkpoint_after),
        "PYTHONUNBUFFERED": "1",
    })
    return env


async def spawn(project: Project, version: str, options: SpawnOptions,
                forkserver: ForkServer | None = None) -> TaskProcess:
    """Start a task process for the project (forked from `forkserver` when there is one); it connects
    back and says hello."""
    process_id = f"p{uuid.uuid4().hex[:16]}"
    own = {"OUTLAST_PROCESS_ID": process_id}
    output = None
    if options.process_dir is not None:
        home = process_home(options.process_dir, process_id)
        home.mkdir(parents=True, exist_ok=True)
        own["OUTLAST_RESUME_DIR"] = str(home)
        # Output goes to an append-only file (a restored pipe would have no reader); its lines reach
        # the run's timeline through the control channel anyway.
        output = home / OUTPUT_FILE
    namespaced = options.process_dir is not None
    ready: asyncio.Future[Hello] = asyncio.get_running_loop().create_future()
    popen: ProcessHandle
    if forkserver is not None:
        try:
            pid = await forkserver.fork(process_id, own, output, namespace=namespaced, network=options.network)
        except ForkServerFailed as exc:
            log.warning("%s; starting the task process from scratch", exc)
        else:
            return TaskProcess(process_id=process_id, version=version, popen=PidProcess(pid), ready=ready,
                               namespaced=namespaced, network=options.network)
    env = {**task_environment(project, options), **own}
    argv = [options.python or sys.executable, "-m", "outlast._process"]
    isolation = options.isolation
    if not options.network:  # never started with more network than asked for
        if isolation is None:
            raise NetworkUnavailable("a task process without network (network=False) needs the fork server "
                                     "(Linux) or OUTLAST_ISOLATION=namespaces")
        isolation = dataclasses.replace(isolation, network=False)
    if isolation is not None:
        argv = isolation.command(argv)
    if output is None:
        popen = await asyncio.create_subprocess_exec(*argv, env=env, cwd=str(project.root),
                                                     stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
    else:
        popen = PidProcess(spawn_in_pid_namespace(argv, env, project.root, output, options.cgroup_procs))
    return TaskProcess(process_id=process_id, version=version, popen=popen, ready=ready, namespaced=namespaced,
                       network=isolation.network if isolation is not None else True)
