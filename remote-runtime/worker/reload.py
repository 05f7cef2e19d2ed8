"""`outlast dev`: re-import the working copy whenever a Python file in it changes, and forgive a
broken save (the error is printed, the node keeps serving what imported last, or nothing)."""

from __future__ import annotations

import watchfiles
from rich.console import Console
from rich.markup import escape

from .supervisor import Supervisor
from .versions import TasksImportFailed, WorkingCopy

console = Console(stderr=True)


def print_import_failure(working_copy: WorkingCopy, exc: TasksImportFailed) -> None:
    """The project's own traceback first (short: see `describe_import_failure`), then what still runs."""
    serving = (f"still serving {working_copy.version}" if working_copy.version
               else "no tasks run until it imports")
    console.print(f"[red]outlast dev: could not import the tasks of {working_copy.project.root}[/red]\n"
                  f"{escape(str(exc))}\n[yellow]{serving}; fix the file and save to reload[/yellow]",
                  soft_wrap=True)  # a traceback's lines as they are, not folded


async def reload_on_change(supervisor: Supervisor) -> None:
    working_copy = supervisor.code
    assert isinstance(working_copy, WorkingCopy), "only a working copy is reloaded"
    async for _changes in watchfiles.awatch(working_copy.project.root, watch_filter=watchfiles.PythonFilter()):
        try:
            task_ids = await supervisor.load_version()
        except TasksImportFailed as exc:
            print_import_failure(working_copy, exc)
            continue
        console.print(f"[green]outlast dev:[/green] reloaded {working_copy.version}: {', '.join(task_ids)}")
