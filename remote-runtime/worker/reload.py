"""`outlast dev`: re-import the working copy whenever a Python file in it changes."""

from __future__ import annotations

import watchfiles
from rich.console import Console

from .supervisor import Supervisor
from .versions import TasksImportFailed, WorkingCopy

console = Console(stderr=True)


async def reload_on_change(supervisor: Supervisor) -> None:
    working_copy = supervisor.code
    assert isinstance(working_copy, WorkingCopy), "only a working copy is reloaded"
    async for _changes in watchfiles.awatch(working_copy.project.root, watch_filter=watchfiles.PythonFilter()):
        try:
            task_ids = await supervisor.load_version()
        except TasksImportFailed as exc:
            console.print(f"[red]outlast dev: could not import the tasks; still serving {working_copy.version}[/red]"
                          f"\n{exc}")
            continue
        console.print(f"[green]outlast dev:[/green] reloaded {working_copy.version}: {', '.join(task_ids)}")
