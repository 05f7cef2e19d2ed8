"""A working copy as the version source: one project directory, its current content is the version.

`outlast runtime` with a project and `outlast worker`/`dev` serve one; loading it again (on a
change, with `--reload`) makes the new content the current version and retires the old one.
"""

from __future__ import annotations

import asyncio
from typing import NoReturn

from outlast._project import Project
from outlast.wire import RunContext

from .backend import WorkerBackend
from .pool import READY_SECONDS, ProcessPool, ProcessSource
from .processes import ProcessExited, TaskProcess


class TasksImportFailed(Exception):
    """The project's tasks could not be imported."""


class WorkingCopy:
    def __init__(self, project: Project, backend: WorkerBackend) -> None:
        self.project = project
        self.backend = backend
        self.version = ""  # the current version: every new attempt runs it ("": none imported yet)
        self.import_error: str | None = None  # why its latest content does not import (None: it does)

    async def load(self, pool: ProcessPool) -> list[str]:
        """Import the project in a fresh process, register its tasks, and make it the current version.

        Raises TasksImportFailed with the traceback when the import fails; the previous version stays.
        """
        version = self.project.content_version()
        process = await pool.spawn(version)
        try:
            hello = await asyncio.wait_for(process.ready, READY_SECONDS)
        except (ProcessExited, TimeoutError) as exc:
            process.kill()
            await self._failed(version, f"task process did not start: {exc}")
        if hello.import_error:
            await self._failed(version, hello.import_error)
        self.import_error = None
        await self.backend.register(version, hello.tasks)
        pool.manifests[version] = hello.tasks
        previous, self.version = self.version, version
        if previous and previous != version:
            pool.close_forkserver(previous)
            pool.retire_idle(lambda old: old.version != version)
        pool.idle.append(process)
        pool.fill()
        return [t.id for t in hello.tasks]

    async def _failed(self, version: str, error: str) -> NoReturn:
        """Keep why `version` does not import, tell the runtime (a remote one refuses triggers naming it), raise."""
        self.import_error = error
        await self.backend.import_failed(version, error)
        raise TasksImportFailed(error) from None

    async def project_for(self, pool: ProcessPool, version: str) -> ProcessSource:
        return ProcessSource(self.project, None, None)

    def version_to_run(self, context: RunContext) -> str:
        return self.version

    def reusable(self, process: TaskProcess) -> bool:
        return process.version == self.version

    def fill(self, pool: ProcessPool) -> None:
        """One warm process of the current version per slot (none before a version imported)."""
        if not self.version:
            return
        current = [p for p in pool.processes.values() if p.version == self.version and not p.retired]
        for _ in range(pool.slots - len(current)):
            pool.background.start(self._warm(pool))

    async def _warm(self, pool: ProcessPool) -> None:
        process = await pool.spawn(self.version)
        try:
            await asyncio.wait_for(process.ready, READY_SECONDS)
        except (ProcessExited, TimeoutError):
            process.kill()
            return
        if process.version == self.version and process.alive:
            pool.add_idle(process)
