"""`outlast schedules ...`: create, list, show (with upcoming ticks in the schedule's zone) and manage schedules."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from rich.table import Table
from rich.text import Text

from .. import _schedules
from .._client import Client
from ..wire import CatchUp, Schedule, ScheduleType
from .output import ApiUrl, ClientFactory, Json, SecretKey, client_errors, print_page, status_text, terminal

__all__ = ["register"]

ScheduleId = Annotated[str, typer.Argument(metavar="SCHEDULE_ID", help="Schedule id.", show_default=False)]
Cron = Annotated[str | None, typer.Option(help="Cron expression: 5 fields, or 6 with seconds last.")]
Zone = Annotated[str | None, typer.Option("--timezone", "--tz", help="IANA time zone, e.g. Europe/Paris.")]
CatchUpOption = Annotated[CatchUp | None, typer.Option(help="After downtime: fire the last missed tick, or skip.")]


def _local(schedule: Schedule, moment: datetime | None) -> str:
    return moment.astimezone(ZoneInfo(schedule.timezone)).strftime("%Y-%m-%d %H:%M:%S %Z") if moment else "-"


def _print_schedule(schedule: Schedule, upcoming: bool = True) -> None:
    console = terminal()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    rows = [
        ("id", schedule.id), ("type", schedule.type.value), ("task", schedule.task), ("cron", schedule.cron),
        ("timezone", schedule.timezone), ("active", "yes" if schedule.active else "no"),
        ("catch up", schedule.catch_up.value), ("external id", schedule.external_id),
        ("deduplication key", schedule.deduplication_key), ("last tick", _local(schedule, schedule.last_timestamp)),
        ("runs", f"outlast runs ls --tag {_schedules.schedule_tag(schedule.id)}"),
    ]
    for name, value in rows:
        if value is not None:
            grid.add_row(name, Text(value))
    console.print(grid)
    if upcoming and schedule.upcoming:
        console.print()
        console.print(Text(f"upcoming ticks ({schedule.timezone})", style="bold"))
        for moment in schedule.upcoming:
            console.print(Text(f"  {_local(schedule, moment)}"))


def register(app: typer.Typer, *, client_factory: ClientFactory = Client) -> None:
    """Add the `schedules` group to `app`."""
    group = typer.Typer(help="Cron schedules: create, list, show, pause and delete them.", no_args_is_help=True)
    app.add_typer(group, name="schedules")

    @group.command("create")
    def create(
        task: Annotated[str, typer.Argument(metavar="TASK", help="Task id.", show_default=False)],
        cron: Annotated[str, typer.Option(help="Cron expression: 5 fields, or 6 with seconds last.")],
        timezone: Annotated[str, typer.Option("--timezone", "--tz", help="IANA time zone.")] = "UTC",
        external_id: Annotated[str | None, typer.Option(help="Your id for it, e.g. a tenant.")] = None,
        deduplication_key: Annotated[
            str | None, typer.Option("--dedup-key", help="Update the schedule with this key instead of adding one.")
        ] = None,
        catch_up: CatchUpOption = None,
        inactive: Annotated[bool, typer.Option("--inactive", help="Create it paused.")] = False,
        as_json: Json = False,
        api_url: ApiUrl = None,
        secret_key: SecretKey = None,
    ) -> None:
        """Create a schedule for TASK (or update the one with the same --dedup-key)."""
        with client_errors(), client_factory(api_url=api_url, secret_key=secret_key) as client:
            schedule = _schedules.create(task, cron, timezone=timezone, external_id=external_id,
                                         deduplication_key=deduplication_key, catch_up=catch_up,
                                         active=False if inactive else None, client=client)
        if as_json:
            typer.echo(schedule.model_dump_json(indent=2))
        else:
            _print_schedule(schedule)

    @group.command("ls")
    def list_schedules(
        task: Annotated[str | None, typer.Option(help="Only this task's schedules.")] = None,
        external_id: Annotated[str | None, typer.Option(help="Only schedules with this external id.")] = None,
        kind: Annotated[ScheduleType | None, typer.Option("--type", help="DECLARATIVE or IMPERATIVE.")] = None,
        limit: Annotated[int, typer.Option(min=1, max=500, help="Schedules per page.")] = 50,
        cursor: Annotated[str | None, typer.Option(help="Page to show, from a previous listing.")] = None,
        as_json: Json = False,
        api_url: ApiUrl = None,
        secret_key: SecretKey = None,
    ) -> None:
        """List schedules, newest first."""
        with client_errors(), client_factory(api_url=api_url, secret_key=secret_key) as client:
            page = _schedules.list(task=task, external_id=external_id, type=kind, limit=limit, cursor=cursor,
                                   client=client)

        def table() -> Table:
            rows = Table(show_edge=False)
            for name in ("id", "task", "cron", "timezone", "next tick", "external id"):
                rows.add_column(name, no_wrap=name in ("id", "cron"), overflow="fold")
            for s in page.data:
                task = s.task + (" (declared)" if s.type is ScheduleType.DECLARATIVE else "")
                next_tick = _local(s, s.next_run) if s.active else Text("paused", style="yellow")
                rows.add_row(Text(s.id), Text(task), Text(s.cron), Text(s.timezone), next_tick,
                             Text(s.external_id or ""))
            return rows

        print_page(page, as_json, "no schedules", table)

    @group.command("show")
    def show(schedule_id: ScheduleId, as_json: Json = False, api_url: ApiUrl = None,
             secret_key: SecretKey = None) -> None:
        """Show a schedule, its next ticks in its own time zone, and its latest runs."""
        with client_errors(), client_factory(api_url=api_url, secret_key=secret_key) as client:
            schedule = _schedules.retrieve(schedule_id, client=client)
            runs = client.list_runs(tag=_schedules.schedule_tag(schedule_id), limit=5).data
        if as_json:
            typer.echo(schedule.model_dump_json(indent=2))
            return
        _print_schedule(schedule)
        if runs:
            console = terminal()
            console.print()
            table = Table(title="latest runs", title_justify="left", show_edge=False)
            for name in ("id", "tick", "status"):
                table.add_column(name, no_wrap=True)
            for run in runs:
                tick = run.payload.get("timestamp") if isinstance(run.payload, dict) else None
                tick = _local(schedule, datetime.fromisoformat(tick)) if tick else "-"
                table.add_row(Text(run.id), Text(tick), status_text(run.status))
            console.print(table)

    @group.command("update")
    def update(
        schedule_id: ScheduleId,
        cron: Cron = None,
        timezone: Zone = None,
        task: Annotated[str | None, typer.Option(help="Fire another task.")] = None,
        external_id: Annotated[str | None, typer.Option()] = None,
        catch_up: CatchUpOption = None,
        api_url: ApiUrl = None,
        secret_key: SecretKey = None,
    ) -> None:
        """Change an imperative schedule; options left out keep their value."""
        with client_errors(), client_factory(api_url=api_url, secret_key=secret_key) as client:
            schedule = _schedules.update(schedule_id, cron=cron, timezone=timezone, task=task,
                                         external_id=external_id, catch_up=catch_up, client=client)
        _print_schedule(schedule)

    def _switch(name: str, help: str, call) -> None:
        @group.command(name, help=help)
        def command(schedule_id: ScheduleId, api_url: ApiUrl = None, secret_key: SecretKey = None) -> None:
            with client_errors(), client_factory(api_url=api_url, secret_key=secret_key) as client:
                schedule = call(schedule_id, client=client)
            state = "deleted" if name == "delete" else ("active" if schedule.active else "inactive")
            terminal().print(Text(f"{schedule.id} {state}"))

    _switch("activate", "Resume a schedule from its next tick on (missed ticks are not caught up).",
            _schedules.activate)
    _switch("deactivate", "Pause a schedule.", _schedules.deactivate)
    _switch("delete", "Delete an imperative schedule.", _schedules.delete)
