"""`outlast bulk cancel|replay|show`: act on every run matching a filter, and follow the job."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._client import Client
from ..wire import BulkAction
from .output import ApiUrl, ClientFactory, Json, SecretKey, client_errors, terminal, time_text

__all__ = ["register"]

Status = Annotated[list[str] | None, typer.Option("--status", "-s", help="Runs with this status (repeatable).")]
TaskOption = Annotated[list[str] | None, typer.Option("--task", help="Runs of this task (repeatable).")]
Tag = Annotated[list[str] | None, typer.Option("--tag", "-t", help="Runs with this tag (repeatable: any).")]
Version = Annotated[str | None, typer.Option(help="Runs of this version.")]
After = Annotated[str | None, typer.Option(help="Runs created at or after this ISO time.")]
Before = Annotated[str | None, typer.Option(help="Runs created before this ISO time.")]
Wait = Annotated[bool, typer.Option("--wait", help="Follow the job until every run is handled.")]


def _print_job(console: Console, job: BulkAction) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    criteria = job.filter.model_dump(mode="json", exclude_defaults=True)
    for name, value in [("id", job.id), ("action", job.action.value), ("state", job.state.value),
                        ("filter", ", ".join(f"{k}={v}" for k, v in criteria.items())),
                        ("progress", f"{job.processed}/{job.total}"), ("succeeded", str(job.succeeded)),
                        ("skipped", str(job.skipped)), ("last skip", job.error), ("created", time_text(job.created_at)),
                        ("completed", time_text(job.completed_at) if job.completed_at else None)]:
        if value is not None:
            grid.add_row(name, Text(value))
    console.print(grid)


def _follow(client: Client, job: BulkAction) -> BulkAction:
    with Console(stderr=True).status(f"{job.action.value}: {job.processed}/{job.total}") as status:
        while not job.is_done:
            time.sleep(0.5)
            job = client.bulk.retrieve(job.id)
            status.update(f"{job.action.value}: {job.processed}/{job.total}")
    return job


def register(app: typer.Typer, *, client_factory: ClientFactory = Client) -> None:
    """Add the `bulk` group to `app`; `client_factory` makes the API client."""
    bulk_app = typer.Typer(help="Cancel or replay every run matching a filter.", no_args_is_help=True)
    app.add_typer(bulk_app, name="bulk")

    def start(action: str, criteria: dict[str, Any], wait: bool, as_json: bool, api_url: str | None,
              secret_key: str | None) -> None:
        where = {name: value for name, value in criteria.items() if value}
        with client_errors(), client_factory(api_url=api_url, secret_key=secret_key) as client:
            job = getattr(client.bulk, action)(where)
            if wait:
                try:
                    job = _follow(client, job)
                except KeyboardInterrupt:
                    typer.echo(f"stopped following; {job.id} goes on (outlast bulk show {job.id})", err=True)
                    raise typer.Exit(130) from None
        if as_json:
            typer.echo(job.model_dump_json(indent=2))
        else:
            _print_job(terminal(), job)

    def action_command(action: str):
        def command(status: Status = None, task: TaskOption = None, tag: Tag = None, version: Version = None,
                    created_after: After = None, created_before: Before = None, wait: Wait = False,
                    as_json: Json = False, api_url: ApiUrl = None, secret_key: SecretKey = None) -> None:
            start(action, {"status": status, "task": task, "tag": tag, "version": version,
                           "created_after": created_after, "created_before": created_before},
                  wait, as_json, api_url, secret_key)

        return command

    bulk_app.command("cancel", help="Cancel every run matching the filter (give at least one option), as a job "
                     "the runtime works through; finished runs are skipped.")(action_command("cancel"))
    bulk_app.command("replay", help="Start a new run (same task, payload and options) for every run matching "
                     "the filter (give at least one option).")(action_command("replay"))

    @bulk_app.command("show")
    def show(job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="Bulk action id.", show_default=False)],
             wait: Wait = False, as_json: Json = False, api_url: ApiUrl = None, secret_key: SecretKey = None) -> None:
        """Show a bulk action's progress."""
        with client_errors(), client_factory(api_url=api_url, secret_key=secret_key) as client:
            job = client.bulk.retrieve(job_id)
            if wait:
                job = _follow(client, job)
        if as_json:
            typer.echo(job.model_dump_json(indent=2))
        else:
            _print_job(terminal(), job)
