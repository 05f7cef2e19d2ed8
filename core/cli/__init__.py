"""The `outlast` command. Runtime commands import the server only when they run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

import typer

from . import bulk, deploy, keys, runs, schedules, workers

app = typer.Typer(no_args_is_help=True, help="outlast: durable background tasks for Python web apps.",
                  pretty_exceptions_enable=False)
runs.register(app)
bulk.register(app)
schedules.register(app)
deploy.register(app)
keys.register(app)


def _default_port() -> int:
    if os.environ.get("OUTLAST_PORT"):
        return int(os.environ["OUTLAST_PORT"])
    url = os.environ.get("OUTLAST_API_URL")
    return (urlparse(url).port or 80) if url else 7070


ProjectOption = Annotated[Path | None, typer.Option(help="Project directory whose tasks this node runs.")]
DatabaseOption = Annotated[str | None, typer.Option(help="postgresql://... (default: SQLite in --data-dir).",
                                                    envvar="OUTLAST_DATABASE_URL")]
DataDirOption = Annotated[Path, typer.Option(help="Where the SQLite store and local files live.",
                                             envvar="OUTLAST_DATA_DIR")]
SlotsOption = Annotated[int, typer.Option(help="Attempts this node runs at once.", envvar="OUTLAST_SLOTS")]


def runtime_settings(data_dir: Path, database_url: str | None, host: str, port: int | None, slots: int,
              node_id: str | None):
    """The settings of a runtime or worker node (what `outlast runtime|dev|worker` and Django's command start)."""
    from outlast.runtime import RuntimeSettings
    from outlast.runtime.worker.isolation import check_settings

    settings = RuntimeSettings(data_dir=data_dir, database_url=database_url, host=host,
                               port=port or _default_port(), slots=slots)
    if node_id:
        settings.node_id = node_id
    try:
        check_settings(settings.isolation)
    except ValueError as exc:  # else it would surface only when the first task process starts
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    return settings


def _project(path: Path | None):
    from outlast._errors import ConfigurationError
    from outlast._project import load_project

    try:
        return load_project(path) if path is not None else None
    except ConfigurationError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None


@app.command()
def runtime(
    project: ProjectOption = None,
    database_url: DatabaseOption = None,
    data_dir: DataDirOption = Path(".outlast"),
    host: Annotated[str, typer.Option(envvar="OUTLAST_HOST")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Default: OUTLAST_PORT, or the port of OUTLAST_API_URL, or 7070.")]
    = None,
    slots: SlotsOption = 2,
    node_id: Annotated[str | None, typer.Option(envvar="OUTLAST_NODE_ID")] = None,
    env: Annotated[list[str], typer.Option(help="Environments the built-in worker serves.")] = ["dev", "prod"],  # noqa: B006
) -> None:
    """Start the runtime: HTTP API, run engine and (with --project) a worker, in one process."""
    from outlast.runtime.server import serve

    settings = runtime_settings(data_dir, database_url, host, port, slots, node_id)
    settings.environments = tuple(env)
    serve(settings, _project(project))


@app.command()
def dev(
    project: Annotated[Path, typer.Option(help="Project directory (default: the current one).")] = Path("."),
    api_url: Annotated[str | None, typer.Option(envvar="OUTLAST_API_URL",
                                                help="A runtime to work for; none: start an embedded one.")] = None,
    secret_key: Annotated[str | None, typer.Option(envvar="OUTLAST_SECRET_KEY")] = None,
    data_dir: DataDirOption = Path(".outlast"),
    port: Annotated[int | None, typer.Option()] = None,
    slots: SlotsOption = 2,
) -> None:
    """Run your working copy's tasks for the dev environment, reloading on every change."""
    loaded = _project(project)
    settings = runtime_settings(data_dir, None, "127.0.0.1", port, slots, None)
    if api_url and secret_key and runtime_reachable(api_url):
        from outlast.runtime.server import run_worker

        run_worker(settings, loaded, api_url, secret_key, reload=True)
        return
    from outlast.runtime.server import serve

    settings.environments = ("dev",)
    serve(settings, loaded, reload=True)


worker_app = typer.Typer(invoke_without_command=True, pretty_exceptions_enable=False)
app.add_typer(worker_app, name="worker")
workers.register(worker_app)


@worker_app.callback()
def worker(
    ctx: typer.Context,
    api_url: Annotated[str | None, typer.Option(envvar="OUTLAST_API_URL", show_default=False)] = None,
    secret_key: Annotated[str | None, typer.Option(envvar="OUTLAST_SECRET_KEY", show_default=False)] = None,
    project: Annotated[Path | None, typer.Option(help="Project directory whose tasks this node runs.")] = None,
    deployments: Annotated[bool, typer.Option("--deployments", help="Run the environment's deployed versions "
                                              "(see `outlast deploy`) instead of a project directory.")] = False,
    data_dir: DataDirOption = Path(".outlast"),
    slots: SlotsOption = 2,
    node_id: Annotated[str | None, typer.Option(envvar="OUTLAST_NODE_ID")] = None,
) -> None:
    """Run a worker node for the environment of the secret key, against a remote runtime. SIGTERM or
    SIGINT (or `outlast worker drain NODE`) drains it; a second signal stops it at once."""
    if ctx.invoked_subcommand is not None:  # `outlast worker drain ...`: its own options
        return
    if not api_url or not secret_key:
        typer.secho(f"error: give --{'api-url' if not api_url else 'secret-key'} (or OUTLAST_"
                    f"{'API_URL' if not api_url else 'SECRET_KEY'})", fg="red", err=True)
        raise typer.Exit(2)
    settings = runtime_settings(data_dir, None, "127.0.0.1", None, slots, node_id)
    if deployments == (project is not None):
        typer.secho("error: give --project DIR or --deployments (one of them)", fg="red", err=True)
        raise typer.Exit(2)
    if deployments:
        from outlast.runtime.deploy.remote import run_deployment_worker

        run_deployment_worker(settings, api_url, secret_key)
        return
    from outlast.runtime.server import run_worker

    run_worker(settings, _project(project), api_url, secret_key)


@app.command()
def doctor() -> None:
    """Check whether this machine can checkpoint waiting runs (CRIU) and enforce machine presets
    (cgroups per controller, user namespaces, runc), and say exactly why not."""
    from outlast.runtime.checkpoint.doctor import report
    from outlast.runtime.worker.isolation_doctor import report as isolation_report

    failed = False
    for section, consequence in (
            (report, "Checkpointing is off on this machine: waiting runs keep their process alive instead."),
            (isolation_report, "Machine presets are NOT enforced on this machine: tasks run without limits.")):
        failures = 0
        for name, ok, detail in section():
            failures += not ok
            typer.secho(f"{'ok ' if ok else 'FAIL'} {name}: {detail}", fg="green" if ok else "red")
        if failures:
            typer.echo(consequence)
        failed |= bool(failures)
    raise typer.Exit(1 if failed else 0)


def runtime_reachable(api_url: str) -> bool:
    """A runtime answers its health check at `api_url` (within 2 s)."""
    import httpx

    try:
        return httpx.get(api_url.rstrip("/") + "/api/v1/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    app()



# Adapter command groups (their modules import no framework or database driver until a command runs).
from outlast.adapters.supabase.cli import app as supabase_app  # noqa: E402

app.add_typer(supabase_app, name="supabase")
