"""One runtime process: store, engine, API state, maintenance loop and (optionally) a supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from outlast._project import Project

from .access.environments import Environments
from .checkpoint.retention import ImageDeleter
from .checkpoint.store import open_store
from .deploy.deployments import Deployments, deployed_manifests
from .engine.facade import RunEngine
from .engine.schedules import Scheduler, sync_declarative
from .errors import TasksDoNotImport, UnknownTask
from .settings import RuntimeSettings
from .store.db import Database
from .store.notify import PostgresListener, Wakeup
from .worker.backend import LocalBackend
from .worker.drain import drain_on_shutdown

log = logging.getLogger("outlast.runtime")


def _does_not_import(task_id: str, problem: str, field: str) -> TasksDoNotImport:
    reason = problem.strip().splitlines()[-1]  # the traceback's last line: the exception itself
    return TasksDoNotImport(f"task {task_id!r} cannot run: the project's tasks do not import ({reason}); "
                            "fix the file and save, `outlast dev` reloads it", field=field)


class RuntimeState:
    def __init__(self, settings: RuntimeSettings, project: Project | None = None, *, reload: bool = False) -> None:
        self.settings = settings
        self.project = project
        self.reload = reload
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.resolved_database_url)
        self.db.migrate()
        self.environments = Environments(self.db)
        self.new_keys = self.environments.bootstrap(settings.dev_key)
        self.wakeup = Wakeup()
        self.engine = RunEngine(
            self.db, lease_seconds=settings.lease_seconds,
            public_url=settings.public_url or f"http://{settings.host}:{settings.port}",
            images=ImageDeleter(open_store(settings.checkpoint_store, settings.data_dir)),
            version_manifests=deployed_manifests,  # triggers locked to a deployed version use its tasks
            register_hooks=[sync_declarative])  # declarative schedules follow the registered code
        self.engine.add_listener(self.wakeup.notify)
        self.scheduler = Scheduler(self.engine)
        self.supervisor: Any = None
        self._init_deployments()

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        self.wakeup.bind(asyncio.get_running_loop())
        maintenance = asyncio.create_task(self._maintenance())
        scheduling = asyncio.create_task(self.scheduler.run())
        listener = None
        if not self.db.is_sqlite:
            listener = PostgresListener(self.db.url.replace("postgresql+psycopg://", "postgresql://"),
                                        self.wakeup.notify)
            listener.start()
        reloader: asyncio.Task[None] | None = None
        if self.project is not None:
            from .worker.supervisor import Supervisor
            from .worker.versions import WorkingCopy

            env_ids = [e for e in self.settings.environments if e in self.environments.ids()]
            backend = LocalBackend(self.engine, self.wakeup, self.settings.node_id, env_ids)
            working_copy = WorkingCopy(self.project, backend)
            self.supervisor = Supervisor(backend, working_copy, self.settings)
            forgive = None
            if self.reload:  # a dev loop: the API stays up while the tasks do not import
                from .worker.reload import print_import_failure

                forgive = functools.partial(print_import_failure, working_copy)
            # The node's lost attempts are written off once the checkpoints a crash left are committed.
            await self.supervisor.start(recover_node=lambda: self.engine.recover_node(self.settings.node_id),
                                        on_import_failure=forgive)
            if self.reload:
                from .worker.reload import reload_on_change

                reloader = asyncio.create_task(reload_on_change(self.supervisor))
        else:
            self.engine.recover_node(self.settings.node_id)
        deployments = asyncio.create_task(self._deployments_loop())
        try:
            yield
        finally:
            deployments.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await deployments
            await drain_on_shutdown([s for s in (self.supervisor, self.deployed_supervisor) if s is not None],
                                    self.settings.drain_grace)
            if self.deployed_supervisor is not None:
                await self.deployed_supervisor.stop()
            if reloader is not None:
                reloader.cancel()
            if self.supervisor is not None:
                await self.supervisor.stop()
            if listener is not None:
                listener.stop()
            maintenance.cancel()
            scheduling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scheduling
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance
            self.db.dispose()

    async def _maintenance(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.engine.tick)
            except Exception:
                log.exception("maintenance tick failed")
            await asyncio.sleep(self.settings.tick_interval)

    @property
    def import_problem(self) -> str | None:
        """Why the project this runtime runs does not import (`outlast dev` after a broken save)."""
        return getattr(self.supervisor.code, "import_error", None) if self.supervisor is not None else None

    def check_runnable(self, env_id: str, task_ids: list[str]) -> None:
        """Refuse, naming the import error, a trigger this dev node cannot run because its tasks do not
        import (a task still served by the version that imported last runs as before)."""
        problem = self.import_problem
        if problem is None or env_id not in self.supervisor.backend.env_ids:
            return
        served = set(self.supervisor.backend.task_ids)
        for index, task_id in enumerate(task_ids):
            if task_id not in served:
                raise _does_not_import(task_id, problem, "task" if len(task_ids) == 1 else f"items.{index}.task")

    @contextlib.contextmanager
    def refusing_unimportable(self, env_id: str, task_ids: list[str]) -> Iterator[None]:
        """A trigger of a task the environment does not have answers 409 naming the import error when a
        dev worker against this runtime (`outlast dev --api-url`) registered that its working copy does
        not import; the store is asked only then (a trigger that is not refused costs nothing more)."""
        try:
            yield
        except UnknownTask as exc:
            problem = self.engine.registration.import_failure(env_id)
            if problem is None:
                raise
            field = exc.field or "task"  # "task", or "items.<index>.task" for a batch
            index = int(field.split(".")[1]) if field.startswith("items.") else 0
            raise _does_not_import(task_ids[index], problem, field) from None

    # --- deployments ---------------------------------------------------------------------------

    def _init_deployments(self) -> None:
        from .deploy.bundles import open_bundle_store
        from .deploy.env_vars import EnvVars, load_key

        self.env_vars = EnvVars(self.db, load_key(self.settings.data_dir))
        self.deployments = Deployments(self.engine, self.env_vars,
                                       open_bundle_store(self.settings.bundle_store, self.settings.data_dir),
                                       self.settings.data_dir)
        self.deployed_supervisor: Any = None
        self._deploy_changed = asyncio.Event()
        self._builds: set[asyncio.Future[None]] = set()

    async def env_vars_changed(self) -> None:
        """New values reach task processes started from now on: idle ones are retired at once, busy ones
        when their attempt ends, fork servers are restarted."""
        if self.deployed_supervisor is not None:
            await self.deployed_supervisor.refresh(recycle=True)

    def start_build(self, version: str) -> None:
        """Build a stored deployment in a worker thread (the API answers at once)."""
        loop = asyncio.get_running_loop()
        build = loop.run_in_executor(None, self.deployments.build, version)
        self._builds.add(build)
        build.add_done_callback(self._builds.discard)

    async def _deployments_loop(self) -> None:
        """Serve deployed versions (a supervisor started once there is one), follow every change, and
        garbage-collect versions no run needs any more."""
        loop = asyncio.get_running_loop()
        self.deployments.on_change = lambda: loop.call_soon_threadsafe(self._deploy_changed.set)
        next_gc = 0.0
        while True:
            try:
                served = await asyncio.to_thread(self.deployments.served)
                if served.versions and self.deployed_supervisor is None and self.settings.serve_deployments:
                    from .deploy.supervisor import DeploymentSupervisor

                    backend = LocalBackend(self.engine, self.wakeup, self.settings.node_id, served.env_ids)
                    self.deployed_supervisor = DeploymentSupervisor(backend, self.deployments, self.settings)
                    await self.deployed_supervisor.start()
                elif self.deployed_supervisor is not None:
                    await self.deployed_supervisor.refresh()
                if loop.time() >= next_gc:
                    next_gc = loop.time() + self.settings.deploy_gc_interval
                    await asyncio.to_thread(self.deployments.collect)
                    await asyncio.to_thread(self.deployments.fail_abandoned)
            except Exception:
                log.exception("deployment upkeep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._deploy_changed.wait(), min(10.0, self.settings.deploy_gc_interval))
            self._deploy_changed.clear()
