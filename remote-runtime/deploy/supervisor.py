"""The supervisor of deployed versions: several versions at once, each run on its own code.

It claims only runs routed to the versions it serves (`run_queue.version`), and starts each
attempt in a process of the run's own version, spawned from that version's unpacked directory
with its virtualenv's interpreter and its environment's variables. So a run keeps the code it
was triggered on while newer versions deploy. One warm process is kept per current version.

That is a version source (`DeployedVersions`) plugged into the worker's `Supervisor`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from outlast._project import Project
from outlast.wire import RunContext

from ..settings import RuntimeSettings
from ..worker.backend import HttpBackend, LocalBackend
from ..worker.pool import READY_SECONDS, ProcessPool, ProcessSource
from ..worker.processes import ProcessExited, TaskProcess
from ..worker.supervisor import Supervisor
from .deployments import Served

log = logging.getLogger("outlast.deployed")


class ServedDeployments(Protocol):
    """What the deployed versions come from: the runtime's `Deployments`, or a remote worker's
    `RemoteDeployments` over the worker API. Called from worker threads."""

    def served(self) -> Served: ...

    def current_versions(self) -> list[str]: ...

    def ensure_local(self, version: str) -> tuple[Project, str]: ...

    def unpack_id(self, version: str) -> str | None: ...


class DeployedVersions:
    """The versions deployed now, each from its own unpacked directory and virtualenv."""

    def __init__(self, deployments: ServedDeployments, backend: LocalBackend | HttpBackend) -> None:
        self.deployments = deployments
        self.backend = backend
        self.current: list[str] = []
        self._roots: dict[str, str | None] = {}  # which unpacking of each version's directory is current
        self._generation = 0  # bumped when environment variables change: older processes are not reused
        self._unwarmable: set[str] = set()  # its warm process failed to start: no respawn loop until a refresh
        self._warming: set[str] = set()  # a warm process of these versions is starting
        backend.versions = []

    async def load(self, pool: ProcessPool) -> list[str]:
        """Nothing to import up front: versions are imported when deployed. Learn what to serve."""
        await self.refresh(pool)
        return []

    async def refresh(self, pool: ProcessPool, *, recycle: bool = False) -> None:
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
        pool.retire_idle(lambda process: recycle or process.version not in served.versions)
        for version in list(pool.forkservers):  # they hold the environment and directory they started with
            if recycle or version not in served.versions:
                pool.close_forkserver(version)
        pool.fill()
        if isinstance(self.backend, LocalBackend):
            self.backend.wakeup.notify()  # the claim loop may be waiting with the old filter

    async def project_for(self, pool: ProcessPool, version: str) -> ProcessSource:
        """Its origin is the unpacking of its directory and the generation of environment variables
        current before they were read (a change meanwhile makes the process not reusable)."""
        generation = self._generation
        project, python = await asyncio.to_thread(self.deployments.ensure_local, version)
        unpacked = self.deployments.unpack_id(version)
        if self._roots.get(version, unpacked) != unpacked:
            pool.close_forkserver(version)  # it runs in the directory this one replaced
        self._roots[version] = unpacked
        return ProcessSource(project, python, (unpacked, generation))

    def version_to_run(self, context: RunContext) -> str:
        return context.version or ""

    def reusable(self, process: TaskProcess) -> bool:
        """Served, its directory still the one it started in (not collected and unpacked again), and its
        environment variables current."""
        if process.version not in (self.backend.versions or []):
            return False
        return process.origin == (self.deployments.unpack_id(process.version), self._generation)

    def fill(self, pool: ProcessPool) -> None:
        for version in self.current:
            if version in self._unwarmable or version in self._warming:
                continue
            if not any(p.version == version and not p.retired for p in pool.processes.values()):
                self._warming.add(version)  # now, not when the coroutine starts: no second one meanwhile
                pool.background.start(self._warm(pool, version))

    async def _warm(self, pool: ProcessPool, version: str) -> None:
        try:
            process = await pool.spawn(version)
            hello = await asyncio.wait_for(process.ready, READY_SECONDS)
            if hello.import_error:
                raise ProcessExited(hello.import_error)
        except Exception as exc:  # a run of that version will fail with the reason too
            log.warning("could not start a process of version %s: %s", version, exc)
            self._unwarmable.add(version)
            return
        finally:
            self._warming.discard(version)
        if process.alive and self.reusable(process):
            pool.add_idle(process)


class DeploymentSupervisor(Supervisor):
    """A `Supervisor` serving the deployed versions; `refresh` follows each deployment change."""

    def __init__(self, backend: LocalBackend | HttpBackend, deployments: ServedDeployments,
                 settings: RuntimeSettings) -> None:
        self.versions = DeployedVersions(deployments, backend)
        super().__init__(backend, self.versions, settings)

    async def refresh(self, *, recycle: bool = False) -> None:
        await self.versions.refresh(self.pool, recycle=recycle)
