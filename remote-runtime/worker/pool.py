"""The process pool: this node's task processes, the warm idle ones, and a fork server per version.

Which versions to keep warm, where each version's code is and whether a process may be reused
is the business of a `VersionSource` (a working copy, or the deployed versions); the pool does
the spawning, tracking and reaping.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Protocol

import outlast
from outlast._project import Project
from outlast.wire import RunContext, TaskManifest
from outlast.wire.machines import Machine

from ..checkpoint.checkpointer import CheckpointSupport
from ..settings import RuntimeSettings
from .background import Background
from .cgroups import TaskCgroup
from .forkserver import ForkServer, ForkServerFailed
from .forkserver import supported as forkserver_supported
from .isolation import (
    FORKSERVER_MEMORY_ENV,
    NETWORK_ENV,
    SOCKETS_DIR,
    Plan,
    forkserver_memory,
    network_from,
    task_workdir,
)
from .isolation import mode_from as isolation_mode
from .isolation import plan_for as isolation_plan
from .limits import CgroupError, Limits, Usage
from .processes import SpawnOptions, TaskProcess, describe_exit, spawn, task_environment

RUNTIME_PACKAGE = Path(__file__).resolve().parent.parent  # outlast.runtime's own directory
READY_SECONDS = 120.0  # for a new process to import the project and say hello
CONNECT_SECONDS = 10.0  # for a process that connected to show up in the pool (a fork call still returning)
log = logging.getLogger("outlast.supervisor")


class MachineTooSmall(Exception):
    """Even a new task process uses more memory than the attempt's machine preset allows."""


class ProcessSource(NamedTuple):
    """What a process of a version starts from."""

    project: Project
    python: str | None  # its interpreter (None: this one)
    origin: object  # compared later by `VersionSource.reusable`; taken before the project's values were read


class VersionSource(Protocol):
    """Which code versions a node runs and where each one's code is."""

    async def load(self, pool: ProcessPool) -> list[str]:
        """Learn what to serve (at start, and again on reload); returns the task ids it imported."""
        ...

    async def project_for(self, pool: ProcessPool, version: str) -> ProcessSource:
        """The project a process of `version` spawned now runs, its interpreter and its origin."""
        ...

    def version_to_run(self, context: RunContext) -> str:
        """The version whose process runs a claimed attempt (a working copy runs its latest code)."""
        ...

    def reusable(self, process: TaskProcess) -> bool:
        """Whether a process that finished an attempt (or waits idle) may run the next one."""
        ...

    def fill(self, pool: ProcessPool) -> None:
        """Start the warm processes that are missing, so a claimed attempt need not wait for imports."""
        ...


class ProcessPool:
    def __init__(self, code: VersionSource, settings: RuntimeSettings, socket_path: Path,
                 checkpoints: CheckpointSupport, background: Background, idle_added: asyncio.Event) -> None:
        self.code = code
        self.settings = settings
        self.slots = settings.slots
        self.socket_path = socket_path
        self.checkpoints = checkpoints
        self.background = background
        self.idle_added = idle_added  # set whenever a warm process joins the idle list
        self.processes: dict[str, TaskProcess] = {}
        self.idle: list[TaskProcess] = []
        self.forkservers: dict[str, asyncio.Future[ForkServer]] = {}  # per version: task processes fork from it
        self.manifests: dict[str, list[TaskManifest]] = {}  # per version, as its first process declared them
        self.stopping = False  # set when the supervisor stops: no more warm processes
        self.limits = Limits(settings.limits, settings.pids_limit)  # each process's cgroup
        if not self.limits.enforced:
            log.warning("%s", self.limits.describe())
        self.isolation = isolation_mode(settings.isolation)
        if self.isolation == "process":
            log.warning("isolation: process (OUTLAST_ISOLATION): task processes see this host's files, "
                        "the runtime's data directory included")
        else:
            log.info("isolation: namespaces (each version's fork server in its own mount, IPC and UTS namespaces)")
        # Whether task processes may have the host's network at all (OUTLAST_TASK_NETWORK, under
        # isolation); a task's network=False takes it away from its own processes only.
        self.node_network = self.isolation == "process" or network_from(os.environ.get(NETWORK_ENV))
        self._process_added = asyncio.Event()

    # --- spawning and tracking -------------------------------------------------------------

    async def spawn(self, version: str, network: bool = True) -> TaskProcess:
        """A new process of `version`; `network` False: loopback only (True: the node's choice)."""
        options = SpawnOptions(
            socket_path=self.socket_path, heartbeat_interval=self.settings.heartbeat_interval,
            cancel_grace=self.settings.cancel_grace, checkpoint_after=self.settings.checkpoint_after,
            process_dir=self.settings.process_dir if self.checkpoints.checkpointer is not None else None,
            network=network and self.node_network)
        source = await self.code.project_for(self, version)
        if source.python is not None:
            options = dataclasses.replace(options, python=source.python)
        if (plan := self._isolation_plan(source.project, options)) is not None:
            options = dataclasses.replace(options, isolation=plan)
        forkserver = await self._forkserver(version, source.project, options)
        cgroup = self.limits.create()  # joined before a process started from scratch imports anything
        if cgroup is not None:
            options = dataclasses.replace(options, cgroup_procs=cgroup.procs_files())
        try:
            process = await spawn(source.project, version, options, forkserver)
            if cgroup is not None:  # a fork of the fork server: moved in before it is given any attempt
                try:
                    cgroup.place(process.pid)
                except ProcessLookupError:
                    pass  # gone already: reaped below like any other
                except CgroupError:
                    process.kill()
                    raise
        except BaseException:
            if cgroup is not None:
                self.background.start(asyncio.to_thread(cgroup.remove))
            raise
        self.limits.adopt(process.pid, cgroup)
        process = self.track(process)
        process.origin = source.origin
        return process

    def track(self, process: TaskProcess) -> TaskProcess:
        if process.network is None:  # a restored process: criu gave it back the network namespace it had
            process.network = _in_host_network(process.pid)
        self.processes[process.process_id] = process
        self._process_added.set()
        self.background.start(self._reap(process))
        return process

    async def lookup(self, process_id: str) -> TaskProcess | None:
        """A process that just connected; a forked one can say hello before its fork call has returned here."""
        deadline = time.monotonic() + CONNECT_SECONDS
        while (process := self.processes.get(process_id)) is None and time.monotonic() < deadline:
            self._process_added.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._process_added.wait(), 0.5)
        return process

    async def _reap(self, process: TaskProcess) -> None:
        returncode = await process.popen.wait()
        if (cgroup := self.limits.exited(process.pid)) is not None:  # its counters are kept for its report
            self.background.start(asyncio.to_thread(cgroup.remove))
        process.gone(describe_exit(returncode))
        self._remove_workdir(process)
        self.processes.pop(process.process_id, None)
        if process in self.idle:
            self.idle.remove(process)
        checkpointer = self.checkpoints.checkpointer
        if checkpointer is not None and process.namespaced and not process.checkpointed:
            checkpointer.forget_process(process.process_id)
        self.fill()

    def fill(self) -> None:
        if not self.stopping:
            self.code.fill(self)

    # --- fork servers ----------------------------------------------------------------------

    async def _forkserver(self, version: str, project: Project, options: SpawnOptions) -> ForkServer | None:
        """The version's fork server, started on first use; None where there is none (its import failing
        included: a process started from scratch then reports the error the usual way; under isolation
        it starts in namespaces of its own, see processes.spawn)."""
        if not forkserver_supported():
            return None
        starting = self.forkservers.get(version)
        if starting is None:
            starting = self.forkservers[version] = asyncio.ensure_future(self._start_forkserver(project, options))
        try:
            return await asyncio.shield(starting)
        except ForkServerFailed:
            if self.forkservers.get(version) is starting:
                del self.forkservers[version]
            return None

    async def _start_forkserver(self, project: Project, options: SpawnOptions) -> ForkServer:
        server = await ForkServer.start(task_environment(project, options), project.root, options.python,
                                        options.isolation)
        if options.isolation is not None:
            server.cgroup = await asyncio.to_thread(self._forkserver_cgroup, server.process.pid)
        return server

    def _forkserver_cgroup(self, pid: int) -> TaskCgroup | None:
        """An isolated fork server's own cgroup, once it imported the project (what it allocated
        until then stays charged where it was): a memory limit (OUTLAST_FORKSERVER_MEMORY_MB), the
        node's cpus, the pids limit, the task devices. Its tasks are forked in it and moved to
        their own at once; criu never dumps the fork server, so checkpoints do not see it."""
        cgroup = self.limits.create()
        if cgroup is None:
            return None
        memory = min(forkserver_memory(os.environ.get(FORKSERVER_MEMORY_ENV)), self.limits.node.memory_bytes)
        try:
            cgroup.limit(self.limits.node.cpus, memory, self.limits.pids_max)
            cgroup.place(pid)
        except (CgroupError, ProcessLookupError) as exc:
            log.warning("fork server %s runs without a cgroup of its own: %s", pid, exc)
            cgroup.remove(attempts=1)
            return None
        return cgroup

    def _isolation_plan(self, project: Project, options: SpawnOptions) -> Plan | None:
        """What a version's fork server may see (None: the host's filesystem, `process` mode)."""
        if self.isolation == "process":
            return None
        # The project, and the interpreter and outlast it runs with: kept even where they live under a
        # directory the namespace replaces (a virtualenv or checkout in /tmp, say).
        code = [project.root, Path(sys.prefix), Path(outlast.__file__).parent, RUNTIME_PACKAGE]
        if options.python is not None:  # a deployed version's virtualenv (in the data directory)
            code.append(Path(options.python).parent.parent)
        shared_sockets = self.socket_path.parent.parent == Path(SOCKETS_DIR)  # also those of supervisors to come
        writable = [Path(SOCKETS_DIR) if shared_sockets else self.socket_path.parent]
        if options.process_dir is not None:  # resume files and output, kept where checkpoints expect them
            options.process_dir.mkdir(parents=True, exist_ok=True)
            writable.append(options.process_dir)
        return isolation_plan(data_dir=self.settings.data_dir, code=code, writable=writable,
                              stores=(self.settings.checkpoint_store, self.settings.bundle_store),
                              shared=os.environ.get("OUTLAST_ISOLATION_SHARE"))

    def _remove_workdir(self, process: TaskProcess) -> None:
        """An ended task's working directory, in its fork server's private /tmp (memory: a tmpfs);
        reached through the fork server's /proc root. A checkpoint image holds its own copy."""
        started = self.forkservers.get(process.version)
        if self.isolation == "process" or started is None or not started.done() or started.exception():
            return
        workdir = task_workdir(started.result().process.pid, process.process_id)
        self.background.start(asyncio.to_thread(shutil.rmtree, workdir, True))

    def close_forkserver(self, version: str) -> None:
        starting = self.forkservers.pop(version, None)
        if starting is not None:  # one still starting is closed once it has started
            starting.add_done_callback(self._close_started)

    def _close_started(self, started: asyncio.Future[ForkServer]) -> None:
        if not started.cancelled() and started.exception() is None:
            self.background.start(started.result().close())

    # --- the idle list ---------------------------------------------------------------------

    def add_idle(self, process: TaskProcess) -> None:
        self.idle.append(process)
        self.idle_added.set()

    def retire(self, process: TaskProcess) -> None:
        """Shut a process down in the background; it takes no more attempts."""
        process.retired = True
        self.background.start(process.shutdown())

    def retire_idle(self, which: Callable[[TaskProcess], bool]) -> None:
        """Retire the idle processes `which` picks (of a version no longer served, say)."""
        for process in list(self.idle):
            if which(process):
                self.idle.remove(process)
                self.retire(process)

    def network_for(self, version: str, task: str | None) -> bool | None:
        """Whether a process running `task` of `version` has the host's network: the node's choice,
        unless the task declared network=False. None: the version's tasks are not known yet (no
        process of it said hello)."""
        if task is None or not self.node_network:
            return self.node_network
        known = self.manifests.get(version) or next(
            (p.tasks for p in self.processes.values() if p.version == version and p.tasks), None)
        if known is None:
            return None
        declared = next((m for m in known if m.id == task), None)
        return declared is None or declared.network  # an unknown task: its process says so

    async def take(self, version: str, task: str | None = None) -> TaskProcess:
        """An idle process of `version` made with the network `task` may have, else a new one once it
        said hello (TimeoutError past READY_SECONDS). A process never serves a task with another network:
        it could neither give a task without network its namespace back, nor the reverse."""
        network = self.network_for(version, task)
        process = await self._take(version, self.node_network if network is None else network)
        if network is None and (network := self.network_for(version, task)) not in (None, process.network):
            self.give_back(process)  # its hello told us `task` declared another network
            process = await self._take(version, network)
        return process

    async def _take(self, version: str, network: bool) -> TaskProcess:
        def fits(process: TaskProcess) -> bool:
            return process.version == version and process.network == network

        while self.idle:
            process = self.idle.pop()
            if not process.alive:
                continue
            if not self.code.reusable(process):
                self.retire(process)
            elif fits(process):
                return process
            else:
                self.idle.insert(0, process)  # another version's or network's: leave it for their runs
                if not any(map(fits, self.idle)):
                    break
        process = await self.spawn(version, network)
        await asyncio.wait_for(process.ready, READY_SECONDS)
        return process

    async def take_sized(self, version: str, machine: Machine,
                         task: str | None = None) -> tuple[TaskProcess, Usage | None]:
        """A process of `version` for `task` (see take) whose cgroup is sized for `machine`, and its
        counters now. A warm process that already holds more memory than `machine` allows is retired
        for a new one; MachineTooSmall if the new one does too."""
        process = await self.take(version, task)
        try:
            return process, self.limits.start_attempt(process.pid, machine)
        except CgroupError:
            self.retire(process)
        process = await self.spawn(version, process.network is not False)
        await asyncio.wait_for(process.ready, READY_SECONDS)
        try:
            return process, self.limits.start_attempt(process.pid, machine)
        except CgroupError as exc:
            self.retire(process)
            raise MachineTooSmall(str(exc)) from None

    def give_back(self, process: TaskProcess) -> None:
        """A process whose attempt ended: idle again if it may run another, else shut down.
        Warm processes are kept up to one per slot: restored ones would otherwise pile up."""
        if process.checkpointed:
            return
        if process.alive and self.code.reusable(process) and not process.retired and len(self.idle) < self.slots:
            self.idle.append(process)
        elif process.alive:
            self.background.start(process.shutdown())

    async def close(self) -> None:
        """Shut every process and fork server down (when the supervisor stops)."""
        await asyncio.gather(*(p.shutdown(self.settings.cancel_grace) for p in self.processes.values()),
                             return_exceptions=True)
        for version in list(self.forkservers):
            self.close_forkserver(version)
        self.limits.close()


def _in_host_network(pid: int) -> bool:
    """Whether `pid` shares this process's network namespace (False if it is gone)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return False
