"""`outlast deploy`, `outlast versions ls|promote|rollback`, `outlast env ls|set|rm|pull-vercel`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from .._bundle import git_info, pack_bundle, plan_bundle, sha256
from .._client import Client
from .._deployments import Deployments
from .._errors import ConfigurationError
from .._project import load_project
from ..wire import Deployment, DeploymentStatus
from .output import ApiUrl, ClientFactory, Json, SecretKey, client_errors, fail, json_text, terminal, time_text

__all__ = ["register"]

POLL_SECONDS = 0.5
BUILD_TIMEOUT = 1800
_STYLES = {DeploymentStatus.READY: "green", DeploymentStatus.BUILDING: "cyan", DeploymentStatus.FAILED: "red"}


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _table(items: list[Deployment]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("version", "status", "current", "commit", "tasks", "created", "on disk"):
        table.add_column(column)
    for d in items:
        table.add_row(d.version, Text(d.status.value, style=_STYLES[d.status]), "*" if d.current else "",
                      (d.git_commit or "-")[:12], str(len(d.tasks)), time_text(d.created_at),
                      "yes" if d.on_disk else "no")
    return table


def _vercel_commit() -> tuple[str, str | None, str]:
    commit = os.environ.get("VERCEL_GIT_COMMIT_SHA")
    if not commit:
        raise fail("--vercel: VERCEL_GIT_COMMIT_SHA is not set (run this in Vercel's build step, "
                    "with a Git-connected project)", 2)
    return commit, os.environ.get("VERCEL_GIT_COMMIT_REF") or None, os.environ.get("VERCEL_ENV", "")


def register(app: typer.Typer, *, client_factory: ClientFactory = Client) -> None:
    """Add `deploy` and the `versions` and `env` groups to `app`."""

    @app.command()
    def deploy(
        project: Annotated[Path, typer.Option(help="Project directory (default: the current one).")] = Path("."),
        dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would ship; upload nothing.")] = False,
        vercel: Annotated[bool, typer.Option("--vercel", help="In Vercel's build step: deploy for its commit "
                                             "(VERCEL_GIT_COMMIT_SHA) so its web code and tasks ship together.")]
        = False,
        wait: Annotated[bool, typer.Option(help="Wait for the build and show its progress.")] = True,
        api_url: ApiUrl = None,
        secret_key: SecretKey = None,
    ) -> None:
        """Pack the project's tasks and requirements into an immutable version and ship it to the runtime."""
        try:
            loaded = load_project(project)
        except ConfigurationError as exc:
            raise fail(str(exc), 2) from None
        commit, branch = git_info(loaded.root)
        vercel_env = None
        if vercel:
            commit, branch, vercel_env = _vercel_commit()
        plan = plan_bundle(loaded)
        console = terminal()
        if dry_run:
            console.print(Text(f"would deploy {loaded.root} ({len(plan.files)} files, {_size(plan.total_bytes)})",
                               style="bold"))
            console.print(f"  tasks modules: {', '.join(loaded.modules)}")
            console.print(f"  requirements:  {loaded.requirements or '(none: the runtime environment)'}")
            console.print(f"  python:        {loaded.python or '(any)'}")
            console.print(f"  env keys:      {', '.join(sorted(loaded.env)) or '-'}")
            console.print(f"  git commit:    {commit or '-'}" + (f" ({branch})" if branch else ""))
            if vercel_env is not None:
                console.print(f"  vercel env:    {vercel_env or '-'}")
            for path in plan.files:
                size = path.lstat().st_size
                console.print(Text(f"    {path.relative_to(loaded.root).as_posix()}  {_size(size)}"))
            for path, why in plan.skipped:
                console.print(Text(f"    skipped {path.relative_to(loaded.root).as_posix()}: {why}", style="yellow"))
            return
        bundle = pack_bundle(plan)
        client = client_factory(api_url=api_url, secret_key=secret_key)
        deployments = Deployments(client)
        with client_errors():
            with console.status(f"uploading {_size(len(bundle))} ({len(plan.files)} files, "
                                f"sha256 {sha256(bundle)[:12]})"):
                deployment = deployments.deploy(bundle, commit=commit, branch=branch)
            console.print(f"version [bold]{deployment.version}[/bold]" + (f" from commit {commit[:12]}"
                                                                        if commit else ""))
            if not wait:
                return
            deadline = time.monotonic() + BUILD_TIMEOUT
            with console.status("building") as status:
                while deployment.status is DeploymentStatus.BUILDING and time.monotonic() < deadline:
                    status.update(f"{deployment.version}: {deployment.step}")
                    time.sleep(POLL_SECONDS)
                    deployment = deployments.get(deployment.version)
        if deployment.status is DeploymentStatus.FAILED:
            console.print(Text(f"deploy of {deployment.version} failed; the current version is unchanged",
                               style="red bold"))
            console.print(Text(deployment.error or deployment.step))
            raise typer.Exit(1)
        if deployment.status is DeploymentStatus.BUILDING:
            raise fail(f"{deployment.version} is still building after {BUILD_TIMEOUT}s", 1)
        tasks = ", ".join(t.id for t in deployment.tasks)
        console.print(Text(f"deployed {deployment.version} to {deployment.env}: {tasks}", style="green"))

    versions = typer.Typer(help="Deployed versions: list, promote, roll back.", no_args_is_help=True)
    app.add_typer(versions, name="versions")

    @versions.command("ls")
    def versions_ls(api_url: ApiUrl = None, secret_key: SecretKey = None, json: Json = False) -> None:
        """The environment's versions, newest first (* marks the current one)."""
        with client_errors():
            items = Deployments(client_factory(api_url=api_url, secret_key=secret_key)).list()
        terminal().print(json_text([d.model_dump(mode="json") for d in items]) if json else _table(items))

    @versions.command("promote")
    def versions_promote(
        version: Annotated[str, typer.Argument(metavar="VERSION", show_default=False)],
        api_url: ApiUrl = None, secret_key: SecretKey = None,
    ) -> None:
        """Make VERSION current: new runs use it (running ones keep theirs)."""
        with client_errors():
            deployment = Deployments(client_factory(api_url=api_url, secret_key=secret_key)).promote(version)
        terminal().print(f"{deployment.version} is now current in {deployment.env}")

    @versions.command("rollback")
    def versions_rollback(api_url: ApiUrl = None, secret_key: SecretKey = None) -> None:
        """Make the previously current version current again."""
        with client_errors():
            deployment = Deployments(client_factory(api_url=api_url, secret_key=secret_key)).rollback()
        terminal().print(f"rolled back: {deployment.version} is now current in {deployment.env}")

    env = typer.Typer(help="Environment variables of the environment's task processes (stored encrypted).",
                      no_args_is_help=True)
    app.add_typer(env, name="env")

    @env.command("ls")
    def env_ls(api_url: ApiUrl = None, secret_key: SecretKey = None, json: Json = False) -> None:
        """Names and hints (values are never shown)."""
        with client_errors():
            items = Deployments(client_factory(api_url=api_url, secret_key=secret_key)).env_list()
        if json:
            terminal().print(json_text([v.model_dump(mode="json") for v in items]))
            return
        table = Table(box=None, header_style="bold")
        for column in ("name", "value", "updated"):
            table.add_column(column)
        for item in items:
            table.add_row(item.name, item.hint, time_text(item.updated_at))
        terminal().print(table)

    @env.command("set")
    def env_set(
        name: Annotated[str, typer.Argument(metavar="NAME", show_default=False)],
        value: Annotated[str, typer.Argument(metavar="VALUE", show_default=False)],
        api_url: ApiUrl = None, secret_key: SecretKey = None,
    ) -> None:
        """Set NAME for new task processes (running ones keep what they started with)."""
        with client_errors():
            item = Deployments(client_factory(api_url=api_url, secret_key=secret_key)).env_set(name, value)
        terminal().print(f"set {item.name} ({item.hint})")

    @env.command("rm")
    def env_rm(
        name: Annotated[str, typer.Argument(metavar="NAME", show_default=False)],
        api_url: ApiUrl = None, secret_key: SecretKey = None,
    ) -> None:
        with client_errors():
            Deployments(client_factory(api_url=api_url, secret_key=secret_key)).env_delete(name)
        terminal().print(f"removed {name}")

    @env.command("pull-vercel")
    def env_pull_vercel(
        project: Annotated[str, typer.Option("--vercel-project", help="Vercel project id or name.",
                                             envvar="VERCEL_PROJECT_ID", show_default=False)],
        target: Annotated[str, typer.Option(help="Vercel environment: production, preview or development.")]
        = "production",
        team: Annotated[str | None, typer.Option(help="Vercel team id.", envvar="VERCEL_TEAM_ID")] = None,
        branch: Annotated[str | None, typer.Option(help="Include preview variables of this git branch.")] = None,
        prune: Annotated[bool, typer.Option("--prune", help="Also remove variables Vercel does not have.")] = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the diff; change nothing.")] = False,
        api_url: ApiUrl = None, secret_key: SecretKey = None,
    ) -> None:
        """Copy a Vercel project's environment variables (token from VERCEL_TOKEN) into this environment."""
        from outlast.adapters.vercel import VercelEnvSync

        with client_errors():
            sync = VercelEnvSync(project, team_id=team)
            try:
                diff = sync.sync(target, Deployments(client_factory(api_url=api_url, secret_key=secret_key)),
                                 branch=branch, prune=prune, dry_run=dry_run)
            finally:
                sync.close()
        console = terminal()
        for line in diff.lines():
            console.print(Text(line))
        verb = "would set" if dry_run else "set"
        console.print(f"{verb} {len(diff.values)} variable(s) from Vercel {target}"
                      + (f", {'would remove' if dry_run else 'removed'} {len(diff.removed)}" if diff.removed else ""))
