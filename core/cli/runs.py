"""`outlast trigger` and `outlast runs ...`: trigger and inspect runs from a terminal."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._client import Client, trigger_options
from .._errors import InvalidRequestError
from ..wire import Run, RunEvent, RunStatus, TriggerOptions
from .output import (
    ApiUrl,
    ClientFactory,
    Json,
    SecretKey,
    client_errors,
    fail,
    json_text,
    print_page,
    status_text,
    terminal,
    time_text,
)

__all__ = ["ClientFactory", "register"]

RunId = Annotated[str, typer.Argument(metavar="RUN_ID", help="Run id.", show_default=False)]

# Option names whose CLI flag is not simply the field name with dashes.
_FLAGS = {"tags": "--tag"}


# --- output helpers ---------------------------------------------------------------------------------












def _duration(ms: int) -> str:
    if ms <= 0:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s"
    return f"{minutes // 60}h {minutes % 60}m"




def _print_run(console: Console, run: Run) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    rows: list[tuple[str, str | Text | None]] = [
        ("id", run.id),
        ("task", run.task),
        ("status", status_text(run.status)),
        ("attempts", f"{run.attempts}/{run.max_attempts}"),
        ("queue", run.queue),
        ("tags", ", ".join(run.tags) or None),
        ("version", run.version),
        ("machine", run.machine),
        ("idempotency key", run.idempotency_key),
        ("concurrency key", run.concurrency_key),
        ("replayed from", run.replayed_from),
        ("created", time_text(run.created_at)),
        ("delayed until", time_text(run.delay_until) if run.delay_until else None),
        ("started", time_text(run.started_at) if run.started_at else None),
        ("completed", time_text(run.completed_at) if run.completed_at else None),
        ("duration", _duration(run.execution_ms)),
        ("cpu time", f"{run.cpu_ms / 1000:.2f}s" if run.cpu_ms is not None else None),
        ("peak memory", f"{run.peak_memory_bytes / 2**20:.1f} MiB" if run.peak_memory_bytes is not None else None),
        ("metadata", json_text(run.metadata) if run.metadata else None),
        ("payload", json_text(run.payload)),
        ("output", json_text(run.output) if run.status is RunStatus.COMPLETED else None),
        ("error", f"{run.error.type}: {run.error.message}" if run.error else None),
    ]
    for name, value in rows:
        if value is not None:
            # Text(), not str: run data may contain [brackets] that rich would read as markup.
            grid.add_row(name, value if isinstance(value, Text) else Text(value))
    console.print(grid)
    if run.error and run.error.stack:
        console.print(Text(run.error.stack.rstrip(), style="dim"))


def _print_events(console: Console, events: list[RunEvent]) -> None:
    table = Table(title="timeline", title_justify="left", show_edge=False)
    for name in ("time", "kind", "attempt", "level"):
        table.add_column(name, no_wrap=True)
    table.add_column("message", overflow="fold")
    for event in events:
        table.add_row(
            event.time.astimezone().strftime("%H:%M:%S.%f")[:-3],
            Text(event.kind),
            "-" if event.attempt is None else str(event.attempt),
            Text(event.level or ""),
            Text(event.message),
        )
    console.print(table)


# --- argument parsing ---------------------------------------------------------------------------------


def _payload(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise fail(
            f"--payload is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            """for a string payload, quote it: --payload '"hello"'""",
            2,
        ) from None


def _duration_arg(raw: str | None) -> float | str | None:
    # Plain numbers are seconds; anything else ("5m", an ISO time) is for TriggerOptions to parse.
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return raw


def _options(**options: Any) -> TriggerOptions:
    try:
        return trigger_options(**options)
    except InvalidRequestError as exc:
        field = (exc.field or "").split(".")[0]
        flag = _FLAGS.get(field, "--" + field.replace("_", "-"))
        raise fail(str(exc).replace(f"invalid {exc.field}", f"invalid {flag}", 1), 2) from None


# --- commands --------------------------------------------------------------------------------------------


def register(app: typer.Typer, *, client_factory: ClientFactory = Client) -> None:
    """Add `trigger` and the `runs` group to `app`; `client_factory` makes the API client."""

    @app.command("trigger")
    def trigger(
        task: Annotated[str, typer.Argument(metavar="TASK", help="Task id.", show_default=False)],
        payload: Annotated[str | None, typer.Option("--payload", "-p", help="Payload as JSON.")] = None,
        delay: Annotated[
            str | None, typer.Option(help="Start after this long (30s, 5m, 1h) or at an ISO time.")
        ] = None,
        ttl: Annotated[str | None, typer.Option(help="Expire if still queued after this long.")] = None,
        tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Tag the run (repeatable).")] = None,
        idempotency_key: Annotated[
            str | None, typer.Option(help="Return the existing run for this key.")
        ] = None,
        queue: Annotated[str | None, typer.Option(help="Queue name.")] = None,
        concurrency_key: Annotated[
            str | None, typer.Option(help="Per-key concurrency within the queue.")
        ] = None,
        priority: Annotated[int | None, typer.Option(help="Higher runs first.")] = None,
        max_attempts: Annotated[int | None, typer.Option(help="Override the task's retry attempts.")] = None,
        max_duration: Annotated[
            str | None, typer.Option(help="Fail an attempt running longer than this.")
        ] = None,
        machine: Annotated[str | None, typer.Option(help="Machine preset.")] = None,
        wait: Annotated[bool, typer.Option("--wait", help="Wait for the run to finish and print it.")] = False,
        api_url: ApiUrl = None,
        secret_key: SecretKey = None,
    ) -> None:
        """Trigger a run of TASK and print its id."""
        body = _payload(payload)
        options = _options(
            delay=_duration_arg(delay), ttl=_duration_arg(ttl), tags=tag or None,
            idempotency_key=idempotency_key, queue=queue, concurrency_key=concurrency_key,
            priority=priority, max_attempts=max_attempts, max_duration=_duration_arg(max_duration),
            machine=machine,
        )
        with client_errors(), client_factory(api_url=api_url, secret_key=secret_key) as client:
            handle = client.trigger(task, body, options)
            typer.echo(handle.id)
            if handle.is_cached:
                typer.echo("(an existing run matched the idempotency key)", err=True)
            if not wait:
                return
            try:
                with Console(stderr=True).status(f"waiting for {handle.id}"):
                    run = client.poll(handle.id, interval=1.0)
            except KeyboardInterrupt:
                typer.echo(f"stopped waiting; {handle.id} goes on (outlast runs show {handle.id})", err=True)
                raise typer.Exit(130) from None
        _print_run(terminal(), run)
        if not run.ok:
            raise typer.Exit(1)

    runs_app = typer.Typer(help="Inspect and manage runs.", no_args_is_help=True)
    app.add_typer(runs_app, name="runs")

    @runs_app.command("ls")
    def list_runs(
        status: Annotated[
            list[str] | None, typer.Option("--status", "-s", help="Only this status (repeatable).")
        ] = None,
        task: Annotated[list[str] | None, typer.Option("--task", help="Only this task (repeatable).")] = None,
        tag: Annotated[
            list[str] | None, typer.Option("--tag", "-t", help="Only runs with this tag (repeatable).")
        ] = None,
        limit: Annotated[int, typer.Option(min=1, help="Runs per page.")] = 20,
        cursor: Annotated[str | None, typer.Option(help="Page to show, from a previous listing.")] = None,
        as_json: Json = False,
        api_url: ApiUrl = None,
        secret_key: SecretKey = None,
    ) -> None:
        """List runs, newest first."""
        with client_errors(), client_factory(api_url=api_url, secret_key=secret_key) as client:
            page = client.list_runs(status=status, task=task, tag=tag, limit=limit, cursor=cursor)

        def table() -> Table:
            rows = Table(show_edge=False)
            rows.add_column("id", no_wrap=True)
            rows.add_column("task", overflow="fold")
            rows.add_column("status", no_wrap=True)
            rows.add_column("attempts", justify="right", no_wrap=True)
            rows.add_column("created", no_wrap=True)
            rows.add_column("duration", justify="right", no_wrap=True)
            for run in page.data:
                rows.add_row(
                    Text(run.id), Text(run.task), status_text(run.status), f"{run.attempts}/{run.max_attempts}",
                    time_text(run.created_at), _duration(run.execution_ms),
                )
            return rows

        print_page(page, as_json, "no runs", table)

    @runs_app.command("show")
    def show(run_id: RunId, as_json: Json = False, api_url: ApiUrl = None, secret_key: SecretKey = None) -> None:
        """Show a run and its timeline."""
        with client_errors(), client_factory(api_url=api_url, secret_key=secret_key) as client:
            run = client.retrieve_run(run_id)
            events = client.run_events(run_id)
        if as_json:
            dumped = {"run": run.model_dump(mode="json"), "events": [e.model_dump(mode="json") for e in events]}
            typer.echo(json_text(dumped))
            return
        out = terminal()
        _print_run(out, run)
        if events:
            out.print()
            _print_events(out, events)

    @runs_app.command("cancel")
    def cancel(run_id: RunId, api_url: ApiUrl = None, secret_key: SecretKey = None) -> None:
        """Cancel a run that has not finished."""
        with client_errors(), client_factory(api_url=api_url, secret_key=secret_key) as client:
            run = client.cancel_run(run_id)
        terminal().print(Text.assemble(run.id, " ", status_text(run.status)))

    @runs_app.command("replay")
    def replay(run_id: RunId, api_url: ApiUrl = None, secret_key: SecretKey = None) -> None:
        """Start a new run with the same task and payload; prints the new run's id."""
        with client_errors(), client_factory(api_url=api_url, secret_key=secret_key) as client:
            handle = client.replay_run(run_id)
        typer.echo(handle.id)
