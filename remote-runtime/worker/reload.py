"""`outlast dev`: re-import the working copy whenever a Python file in it changes."""

from __future__ import annotations

from typing import Any

import watchfiles
from rich.console import Console

from .supervisor import TasksImportFailed

console = Console(stderr=True)


async def reload_on_change(supervisor: Any) -> None:
    root = supervisor.project.root
    async for _changes in watchfiles.awatch(root, watch_filter=watchfiles.PythonFilter()):
        try:
            task_ids = await supervisor.load_version()
        except TasksImportFailed as exc:
            console.print(f"[red]outlast dev: could not import the tasks; still serving {supervisor.version}[/red]"
                          f"\n{exc}")
            continue
        console.print(f"[green]outlast dev:[/green] reloaded {supervisor.version}: {', '.join(task_ids)}")
