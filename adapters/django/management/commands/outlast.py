"""`python manage.py outlast dev|worker|deploy|runs|trigger ...`: the outlast CLI with Django's settings.

`settings.OUTLAST` becomes OUTLAST_API_URL / OUTLAST_SECRET_KEY for the CLI, and the tasks
modules are the installed apps' `tasks` modules (unless pyproject.toml's `[tool.outlast]` names
them). Task processes get DJANGO_SETTINGS_MODULE (their only variable from this process's environment,
besides the runtime's short allow-list and OUTLAST_TASK_PASS_ENV) and call `django.setup()` before importing
any task, so task code uses the ORM as a view does.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from outlast._config import API_URL_ENV, SECRET_KEY_ENV
from outlast._errors import ConfigurationError
from outlast._project import Project, load_project

from ...conf import outlast_settings

PASSED_THROUGH = ("deploy", "runs", "trigger")


class Command(BaseCommand):
    help = "The outlast CLI with this project's settings: dev, worker, deploy, runs, trigger."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("subcommand", choices=["dev", "worker", *PASSED_THROUGH])
        parser.add_argument("args", nargs=argparse.REMAINDER, help="Arguments of `outlast <subcommand>`.")

    def handle(self, *args: str, subcommand: str, **options: Any) -> None:
        if subcommand in ("dev", "worker"):
            os.environ.update(_client_environ())  # this process and the task processes it starts
            self._node(subcommand, list(args))
            return
        saved = {name: os.environ.get(name) for name in (API_URL_ENV, SECRET_KEY_ENV)}
        os.environ.update(_client_environ())
        try:
            self._cli(subcommand, list(args))
        finally:  # call_command() in a long-lived process must not leave the variables behind
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    # --- dev / worker: the runtime with the installed apps' tasks ----------------------------

    def _node(self, subcommand: str, args: list[str]) -> None:
        parser = argparse.ArgumentParser(prog=f"manage.py outlast {subcommand}")
        parser.add_argument("--slots", type=int, default=int(os.environ.get("OUTLAST_SLOTS", "2")),
                            help="Attempts this node runs at once (OUTLAST_SLOTS, 2).")
        parser.add_argument("--port", type=int, default=None,
                            help="Embedded runtime's port (default: the port of OUTLAST_API_URL, or 7070).")
        parser.add_argument("--data-dir", type=Path, default=None,
                            help="Embedded runtime's store and files (default: BASE_DIR/.outlast).")
        parser.add_argument("--node-id", default=None, help="This node's name in the runtime.")
        parsed = parser.parse_args(args)
        if not os.environ.get("DJANGO_SETTINGS_MODULE"):
            raise CommandError("DJANGO_SETTINGS_MODULE is not set: task processes need it to set Django up")
        try:
            from outlast.cli import runtime_reachable, runtime_settings
            from outlast.runtime.server import run_worker, serve
        except ImportError as exc:
            raise CommandError(f"the runtime is not installed ({exc}): pip install 'outlast[runtime]'") from None
        project = self.project()
        # Task processes do not inherit this process's environment: hand them the settings module.
        project = dataclasses.replace(project, env={"DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"],
                                                    **project.env})
        self.stdout.write(f"outlast {subcommand}: {project.root}, tasks from {', '.join(project.modules)}")
        data_dir = parsed.data_dir or project.root / ".outlast"
        node = runtime_settings(data_dir, None, "127.0.0.1", parsed.port, parsed.slots, parsed.node_id)
        api_url, key = os.environ.get(API_URL_ENV), os.environ.get(SECRET_KEY_ENV)
        if subcommand == "worker":
            if not (api_url and key):
                raise CommandError("worker needs the runtime's URL and key: OUTLAST['API_URL'] and "
                                   "OUTLAST['SECRET_KEY'] (or OUTLAST_API_URL / OUTLAST_SECRET_KEY)")
            run_worker(node, project, api_url, key)
        elif api_url and key and runtime_reachable(api_url):
            run_worker(node, project, api_url, key, reload=True)
        else:
            node.environments = ("dev",)
            serve(node, project, reload=True)

    def project(self) -> Project:
        """The project at BASE_DIR: its `[tool.outlast]` if it names tasks, else the apps' tasks modules."""
        root = Path(getattr(settings, "BASE_DIR", None) or os.getcwd()).resolve()
        try:
            configured = load_project(root)
        except ConfigurationError:
            configured = None
        if configured is not None and _names_tasks(root):
            return configured
        modules = tuple(f"{app.name}.tasks" for app in apps.get_app_configs()
                        if app.name != "outlast.adapters.django" and _has_module(f"{app.name}.tasks"))
        if not modules:
            raise CommandError("no installed app has a tasks module: declare tasks in <app>/tasks.py, "
                               "or name the modules in [tool.outlast] tasks = [...] in pyproject.toml")
        return Project(root=root, modules=modules, env=configured.env if configured else {})

    # --- deploy / runs / trigger: the CLI itself ---------------------------------------------

    def _cli(self, subcommand: str, args: list[str]) -> None:
        import typer

        from outlast.cli import app

        group = typer.main.get_command(app)
        command = getattr(group, "commands", {}).get(subcommand)
        if command is None:
            raise CommandError(f"this version of outlast has no `{subcommand}` command "
                               f"(`outlast --help` lists what it has)")
        if subcommand == "deploy" and any(p.name == "project" for p in command.params) \
                and not any(a == "--project" or a.startswith("--project=") for a in args):
            args = ["--project", str(self.project().root), *args]
        try:  # standalone: the CLI prints its own errors and exits with its own code, as `outlast` would
            group.main(args=[subcommand, *args], prog_name="manage.py outlast", standalone_mode=True)
        except SystemExit as exc:
            if exc.code:
                raise


def _client_environ() -> dict[str, str]:
    """settings.OUTLAST's runtime URL and key as OUTLAST_* variables; they win over the environment's."""
    config = getattr(settings, "OUTLAST", None) or {}
    resolved = outlast_settings().client
    environ = {}
    if config.get("API_URL"):
        environ[API_URL_ENV] = resolved.api_url
    if config.get("SECRET_KEY") and resolved.secret_key:
        environ[SECRET_KEY_ENV] = resolved.secret_key
    return environ


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _names_tasks(root: Path) -> bool:
    import tomllib

    pyproject = root / "pyproject.toml"
    if not pyproject.exists():
        return (root / "tasks.py").exists() or (root / "tasks" / "__init__.py").exists()
    config = tomllib.loads(pyproject.read_text()).get("tool", {}).get("outlast", {})
    return "tasks" in config or (root / "tasks.py").exists() or (root / "tasks" / "__init__.py").exists()
