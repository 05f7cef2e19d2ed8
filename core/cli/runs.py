"""`outlast trigger` and `outlast runs ...`: trigger and inspect runs from a terminal."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._client import Client, trigger_options
from .._config import API_URL_ENV, SECRET_KEY_ENV
from .._errors import InvalidRequestError, OutlastError
from ..wire import Run, RunEvent, RunStatus, TriggerOptions

__all__ = ["ClientFactory", "register"]

ClientFactory = Callable[..., Client]
"""Called as `factory(api_url=..., secret_key=...)`, either may be None; `Client` by default."""

ApiUrl = Annotated[
    str | None,
    typer.Option("--api-url", envvar=API_URL_ENV, show_default=False, help="Runtime URL."),
]
SecretKey = Annotated[
    str | None,
    typer.Option("--secret-key", envvar=SECRET_KEY_ENV, show_default=False, help="Environment secret key."),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
RunId = Annotated[str, typer.Argument(metavar="RUN_ID", help="Run id.", show_default=False)]

_STATUS_STYLES = {
    RunStatus.COMPLETED: "green",
    RunStatus.EXECUTING: "blue",
    RunStatus.WAITING: "cyan",
    RunStatus.QUEUED: "cyan",
    RunStatus.DELAYED: "cyan",
    RunStatus.CANCELED: "yellow",
    RunStatus.EXPIRED: "yellow",
}
# Option names whose CLI flag is not simply the field name with dashes.
_FLAGS = {"tags": "--tag"}


# --- output helpers ---------------------------------------------------------------------------------


def _out() -> Console:
    return Console(highlight=False)


def _fail(message: str, code: int) -> typer.Exit:
    Console(stderr=True, highlight=False).print(Text(f"error: {message}", style="red"), soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def _client_errors() -> Iterator[None]:
    """Turn outlast's exceptions into `error: ...` on stderr and exit code 1."""
    try:
        yield
    except OutlastError as exc:
        raise _fail(str(exc), 1) from None


def _status(status: RunStatus) -> Text:
    return Text(status.value, style=_STATUS_STYLES.get(status, "red"))


def _time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


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


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _print_run(console: Console, run: Run) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    rows: list[tuple[str, str | Text | None]] = [
        ("id", run.id),
        ("task", run.task),
        ("status", _status(run.status)),
        ("attempts", f"{run.attempts}/{run.max_attempts}"),
        ("queue", run.queue),
        ("tags", ", ".join(run.tags) or None),
        ("version", run.version),
        ("machine", run.machine),
        ("idempotency key", run.idempotency_key),
        ("concurrency key", run.concurrency_key),
        ("replayed from", run.replayed_from),
        ("created", _time(run.created_at)),
        ("delayed until", _time(run.delay_until) if run.delay_until else None),
        ("started", _time(run.started_at) if run.started_at else None),
        ("completed", _time(run.completed_at) if run.completed_at else None),
        ("duration", _duration(run.execution_ms)),
        ("metadata", _json(run.metadata) if run.metadata else None),
        ("payload", _json(run.payload)),
        ("output", _json(run.output) if run.status is RunStatus.COMPLETED else None),
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
        raise _fail(
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
        raise _fail(str(exc).replace(f"invalid {exc.field}", f"invalid {flag}", 1), 2) from None


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
        with _client_errors(), client_factory(api_url=api_url, secret_key=secret_key) as client:
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
        _print_run(_out(), run)
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
        with _client_errors(), client_factory(api_url=api_url, secret_key=secret_key) as client:
            page = client.list_runs(status=status, task=task, tag=tag, limit=limit, cursor=cursor)
        if as_json:
            typer.echo(page.model_dump_json(indent=2))
            return
        console = _out()
        if not page.data:
            console.print("no runs")
        else:
            table = Table(show_edge=False)
            table.add_column("id", no_wrap=True)
            table.add_column("task", overflow="fold")
            table.add_column("status", no_wrap=True)
            table.add_column("attempts", justify="right", no_wrap=True)
            table.add_column("created", no_wrap=True)
            table.add_column("duration", justify="right", no_wrap=True)
            for run in page.data:
                table.add_row(
                    Text(run.id), Text(run.task), _status(run.status), f"{run.attempts}/{run.max_attempts}",
                    _time(run.created_at), _duration(run.execution_ms),
                )
            console.print(table)
        if page.next_cursor:
            console.print(Text(f"next cursor: {page.next_cursor}"), soft_wrap=True)

    @runs_app.command("show")
    def show(run_id: RunId, as_json: Json = False, api_url: ApiUrl = None, secret_key: SecretKey = None) -> None:
        """Show a run and its timeline."""
        with _client_errors(), client_factory(api_url=api_url, secret_key=secret_key) as client:
            run = client.retrieve_run(run_id)
            events = client.run_events(run_id)
        if as_json:
            dumped = {"run": run.model_dump(mode="json"), "events": [e.model_dump(mode="json") for e in events]}
            typer.echo(_json(dumped))
            return
        console = _out()
        _print_run(console, run)
        if events:
            console.print()
            _print_events(console, events)

    @runs_app.command("cancel")
    def cancel(run_id: RunId, api_url: ApiUrl = None, secret_key: SecretKey = None) -> None:
        """Cancel a run that has not finished."""
        with _client_errors(), client_factory(api_url=api_url, secret_key=secret_key) as client:
            run = client.cancel_run(run_id)
        _out().print(Text.assemble(run.id, " ", _status(run.status)))

    @runs_app.command("replay")
    def replay(run_id: RunId, api_url: ApiUrl = None, secret_key: SecretKey = None) -> None:
        """Start a new run with the same task and payload; prints the new run's id."""
        with _client_errors(), client_factory(api_url=api_url, secret_key=secret_key) as client:
            handle = client.replay_run(run_id)
        typer.echo(handle.id)
