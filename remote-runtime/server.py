"""Run the runtime: `outlast runtime` (API + engine + supervisor) and `outlast worker`/`dev` nodes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any

import uvicorn
from rich.console import Console

from outlast._project import Project

from .api.app import create_app
from .settings import RuntimeSettings
from .state import RuntimeState
from .worker.backend import HttpBackend
from .worker.drain import drain_unless_forced, stop_signals, until_stopped

console = Console(stderr=True)


def print_new_keys(state: RuntimeState) -> None:
    if not state.new_keys:
        return
    console.print("[bold]outlast:[/bold] created environments (keys are stored hashed; copy them now):")
    for env_id, key in state.new_keys.items():
        seeded = env_id == "dev" and key == state.settings.dev_key
        console.print(f"  {env_id:5} OUTLAST_SECRET_KEY={key}" + ("  (from OUTLAST_SECRET_KEY)" if seeded else ""),
                      soft_wrap=True)  # never break a key across lines


def serve(settings: RuntimeSettings, project: Project | None = None, *, reload: bool = False,
          log_level: str = "warning") -> None:
    """Serve until interrupted. With `reload`, the project is re-imported whenever a .py file changes."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    state = RuntimeState(settings, project, reload=reload)
    print_new_keys(state)
    if state.settings.dev_key and state.environments.authenticate(state.settings.dev_key) is None:
        console.print("[yellow]warning:[/yellow] OUTLAST_SECRET_KEY matches no environment of this runtime "
                      f"(its store at {settings.resolved_database_url} was seeded with another key)")
    app = create_app(state)
    where = f"http://{settings.host}:{settings.port}"
    tasks = f", project {project.root}" if project else " (no project: tasks come from workers)"
    console.print(f"[bold green]outlast runtime[/bold green] on {where}{tasks}, store "
                  f"{'SQLite' if state.db.is_sqlite else 'PostgreSQL'}, {settings.slots} slots; "
                  f"API docs at {where}/api/v1/docs")
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level, access_log=False,
                            lifespan="on")
    uvicorn.Server(config).run()


def run_worker(settings: RuntimeSettings, project: Project, api_url: str, secret_key: str, *,
               reload: bool = False) -> None:
    """A supervisor on this machine that runs `project` for the environment of `secret_key`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(_worker(settings, project, api_url, secret_key, reload))


async def _worker(settings: RuntimeSettings, project: Project, api_url: str, secret_key: str,
                  reload: bool) -> None:
    from .worker.reload import print_import_failure, reload_on_change
    from .worker.supervisor import Supervisor
    from .worker.versions import WorkingCopy

    backend = HttpBackend(api_url, secret_key, settings.node_id)
    working_copy = WorkingCopy(project, backend)
    supervisor = Supervisor(backend, working_copy, settings)
    await supervisor.start(on_import_failure=functools.partial(print_import_failure, working_copy) if reload else None)
    console.print(f"[bold green]outlast worker[/bold green] {settings.node_id} serving {project.root} "
                  f"(version {working_copy.version}) for {api_url}")
    stop, forced = asyncio.Event(), asyncio.Event()
    stop_signals(stop, forced)
    background: list[Any] = [asyncio.create_task(reload_on_change(supervisor))] if reload else []
    await until_stopped(stop, supervisor)
    for task in background:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*background)
    await drain_unless_forced(supervisor, settings.drain_grace, forced)
    await supervisor.stop()
    await backend.aclose()

