"""`outlast supabase setup|drain`: create the database triggers, and drain the outbox.

Imports nothing of Supabase's, nor a database driver until `--apply` or `drain` needs one.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import Annotated

import typer

from ._receiver import SECRET_ENV, SECRET_HEADER
from ._sql import SetupPlan, setup_sql

app = typer.Typer(no_args_is_help=True, help="Trigger tasks from Supabase (PostgreSQL) row changes.")


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)


@app.command()
def setup(
    table: Annotated[list[str], typer.Option("--table", help="schema.table whose changes trigger tasks; repeatable.")],
    events: Annotated[str, typer.Option(help="Comma-separated: insert, update, delete.")] = "insert",
    url: Annotated[str | None, typer.Option(help="The receiver, e.g. https://app.example.com/outlast/supabase.")]
    = None,
    secret_env: Annotated[str, typer.Option(help="Environment variable holding the shared secret.")] = SECRET_ENV,
    outbox: Annotated[bool, typer.Option("--outbox", help="Also record every change in outlast.outbox, in the "
                                         "same transaction, for `outlast supabase drain` (nothing is missed).")]
    = False,
    name: Annotated[str, typer.Option(help="Name of this webhook's settings row.")] = "default",
    header: Annotated[str, typer.Option(help="Header that carries the secret.")] = SECRET_HEADER,
    apply: Annotated[str | None, typer.Option("--apply", metavar="DATABASE_URL",
                                              help="Run the SQL against this database instead of printing it.")]
    = None,
) -> None:
    """Print (or with --apply, run) the SQL that sends TABLE's row changes to the receiver or the outbox."""
    secret = None
    if url is not None:
        secret = os.environ.get(secret_env, "").strip()
        if not secret:
            raise _fail(f"--secret-env: environment variable {secret_env} is not set (it holds the secret the "
                        "receiver checks; set the same variable where the receiver runs)")
    try:
        sql = setup_sql(SetupPlan(tables=table, events=[e for e in events.split(",") if e.strip()], url=url,
                                  secret=secret, outbox=outbox, name=name, header=header))
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if apply is None:
        typer.echo(sql)
        return
    try:
        import psycopg
    except ImportError:
        raise _fail("--apply needs psycopg: pip install 'outlast[supabase]'") from None
    try:
        with psycopg.connect(apply) as conn:
            conn.execute(sql)  # one transaction: all of it or none of it
    except psycopg.Error as exc:
        raise _fail(f"the database refused the setup: {exc}", 1) from None
    typer.echo(f"set up {', '.join(table)} ({events}){' with the outbox' if outbox else ''}")


@app.command()
def drain(
    database_url: Annotated[str, typer.Option(envvar="DATABASE_URL", help="The database with outlast.outbox.")],
    routes: Annotated[str, typer.Option(help="Module declaring the routes (`module` or `module:router`).")],
    once: Annotated[bool, typer.Option("--once", help="Drain what is there, then exit.")] = False,
    batch_size: Annotated[int, typer.Option(help="Rows per transaction.")] = 100,
    poll_interval: Annotated[float, typer.Option(help="Seconds between looks when no notification comes.")] = 1.0,
) -> None:
    """Trigger the tasks of every change in outlast.outbox (uses OUTLAST_API_URL and OUTLAST_SECRET_KEY)."""
    from ._outbox import OutboxDrainer

    router = _router(routes)
    try:
        drainer = OutboxDrainer(database_url, router, batch_size=batch_size, poll_interval=poll_interval)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if once:
        result = drainer.drain()
        drainer.close()
        typer.echo(f"triggered {result.triggered}, ignored {result.ignored}, kept for a retry {result.deferred}")
        return
    with contextlib.suppress(KeyboardInterrupt):
        drainer.run()


def _router(spec: str):
    from ._routes import Router, default_router

    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _fail(f"--routes: cannot import {module_name!r}: {exc}") from None
    if not attr:
        return default_router
    router = getattr(module, attr, None)
    if not isinstance(router, Router):
        raise _fail(f"--routes: {module_name}.{attr} is not a Router")
    return router
