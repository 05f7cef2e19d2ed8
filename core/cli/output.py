"""What every CLI command shares: the API options, printing, and turning errors into `error: ...`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console, RenderableType
from rich.text import Text

from .._client import Client
from .._config import API_URL_ENV, SECRET_KEY_ENV
from .._errors import OutlastError
from ..wire import RunList, RunStatus, ScheduleList

__all__ = [
    "ApiUrl",
    "ClientFactory",
    "Json",
    "SecretKey",
    "client_errors",
    "fail",
    "json_text",
    "print_page",
    "status_text",
    "terminal",
    "time_text",
]

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

_STATUS_STYLES = {
    RunStatus.COMPLETED: "green",
    RunStatus.EXECUTING: "blue",
    RunStatus.WAITING: "cyan",
    RunStatus.QUEUED: "cyan",
    RunStatus.DELAYED: "cyan",
    RunStatus.CANCELED: "yellow",
    RunStatus.EXPIRED: "yellow",
}


def terminal() -> Console:
    return Console(highlight=False)


def fail(message: str, code: int) -> typer.Exit:
    """Print `error: message` on stderr; raise the returned `typer.Exit` to exit with `code`."""
    Console(stderr=True, highlight=False).print(Text(f"error: {message}", style="red"), soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def client_errors() -> Iterator[None]:
    """Turn outlast's exceptions into `error: ...` on stderr and exit code 1."""
    try:
        yield
    except OutlastError as exc:
        raise fail(str(exc), 1) from None


def status_text(status: RunStatus) -> Text:
    return Text(status.value, style=_STATUS_STYLES.get(status, "red"))


def time_text(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def json_text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def print_page(page: RunList | ScheduleList, as_json: bool, empty: str, table: Callable[[], RenderableType]) -> None:
    """A listing: JSON, or `empty` when there is nothing, or the table; then the cursor of the next page."""
    if as_json:
        typer.echo(page.model_dump_json(indent=2))
        return
    out = terminal()
    out.print(table() if page.data else empty)
    if page.next_cursor:
        out.print(Text(f"next cursor: {page.next_cursor}"), soft_wrap=True)
