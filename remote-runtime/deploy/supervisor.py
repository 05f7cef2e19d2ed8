"""The supervisor of deployed versions: several versions at once, each run on its own code.

It claims only runs routed to the versions it serves (`run_queue.version`), and starts each
attempt in a process of the run's own version, spawned from that version's unpacked directory
with its virtualenv's interpreter and its environment's variables. So a run keeps the code it
was triggered on while newer versions deploy. One warm process is kept per current version.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from outlast._project import Project

from ..settings import RuntimeSettings
from ..worker.backend import HttpBackend, LocalBackend
from ..worker.processes import ProcessExited, TaskProcess
from ..worker.supervisor import Execution, Supervisor
from .deployments import Deployments

if TYPE_CHECKING:
    from .remote import RemoteDeployments

log = logging.getLogger("outlast.deployed")


class DeploymentSupervisor(Supervisor):
    def __init__(self, backend: LocalBackend | HttpBackend, deployments: Deployments | RemoteDeployments,
                 settings: RuntimeSettings) -> None:
        super().__init__(backend, None, settings)
        self.backend: LocalBackend | HttpBackend = backend
        self.deployments = deployments
        self.current: list[str] = []
        self._roots: dict[str, str | None] = {}  # which unpacking of each version's directory is current
        self._started_in: dict[str, tuple[str | None, int]] = {}  # each process's unpacking and env generation
        self._generation = 0  # bumped when environment variables change: older processes are not reused
        self._unwarmable: set[str] = set()  # its warm process failed to start: no respawn loop until a refresh
        self._warming: set[str] = set()  # a warm process of these versions is starting
        backend.versions = []

    async def load_version(self) -> list[str]:
        """Nothing to import up front: versions are imported when deployed. Learn what to serve."""
        await self.refresh()
        return []

    async def refresh(self, *, recycle: bool = False) -> None:
        """Serve the versions that are deployed now; retire idle processes of versions no longer served
        (all of them with `recycle`: they were started with environment variables that changed)."""
        if recycle:
            self._generation += 1
        served = await asyncio.to_thread(self.deployments.served)
        self.current = await asyncio.to_thread(self.deployments.current_versions)
        self.backend.versions, self.backend.task_ids = served.versions, served.task_ids
        if served.env_ids:  # a remote worker's environment is its key's
            self.backend.env_ids = served.env_ids
        self._unwarmable.clear()
        for process in list(self.idle):
            if recycle or process.version not in served.versions:
                self.idle.remove(process)
                process.retired = True
                self._in_background(process.shutdown())
        for version in list(self.forkservers):  # they hold the environment and directory they started with
            if recycle or version not in served.versions:
                self._close_forkserver(version)
        self._fill_pool()
        if isinstance(self.backend, LocalBackend):
            self.backend.wakeup.notify()  # the claim loop may be waiting with the old filter

    async def _project_for(self, version: str) -> tuple[Project, str | None]:
        project, python = await asyncio.to_thread(self.deployments.ensure_local, version)
        unpacked = self.deployments.unpack_id(version)
        if self._roots.get(version, unpacked) != unpacked:
            self._close_forkserver(version)  # it runs in the directory this one replaced
        self._roots[version] = unpacked
        return project, python

    async def _spawn(self, version: str) -> TaskProcess:
        process = await super()._spawn(version)
        self._started_in[process.process_id] = (self._roots.get(version), self._generation)
        return process

    async def _reap(self, process: TaskProcess) -> None:
        await super()._reap(process)
        self._started_in.pop(process.process_id, None)

    def _version_to_run(self, execution: Execution) -> str:
        return execution.context.version or ""

    def _reusable(self, process: TaskProcess) -> bool:
        """Served, its directory still the one it started in (not collected and unpacked again), and its
        environment variables current."""
        if process.version not in (self.backend.versions or []):
            return False
        started = self._started_in.get(process.process_id)
        return started == (self.deployments.unpack_id(process.version), self._generation)

    def _fill_pool(self) -> None:
        if self._stopping:
            return
        for version in self.current:
            if version in self._unwarmable or version in self._warming:
                continue
            if not any(p.version == version and not p.retired for p in self.processes.values()):
                self._warming.add(version)  # now, not when the coroutine starts: no second one meanwhile
                self._in_background(self._warm_version(version))

    async def _warm_version(self, version: str) -> None:
        try:
            process = await self._spawn(version)
            hello = await asyncio.wait_for(process.ready, 120)
            if hello.import_error:
                raise ProcessExited(hello.import_error)
        except Exception as exc:  # a run of that version will fail with the reason too
            log.warning("could not start a process of version %s: %s", version, exc)
            self._unwarmable.add(version)
            return
        finally:
            self._warming.discard(version)
        if process.alive and self._reusable(process):
            self.idle.append(process)
            self._slot_freed.set()

