"""Adapter tests: a runtime running an example app's tasks, and that example imported in the test process."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import ROOT, SECRET_KEY, RuntimeProcess, free_port, runtime_process

EXAMPLES = ROOT / "examples"


def example_runtime_fixture(example: str, extra_env: Callable[[], dict[str, str]] | None = None,
                            project_env: Callable[[], dict[str, str]] | None = None):
    """A module-wide SQLite runtime whose project is `examples/<example>`: it runs that app's tasks.

    `extra_env` is the runtime's environment; `project_env` is what the tasks get of their own, through
    the project's `[tool.outlast] env` table (in a copy of the example): the runtime's own secrets, AWS
    credentials included, never reach task code.
    """
    return project_runtime_fixture(EXAMPLES / example, extra_env, project_env)


def project_runtime_fixture(project: Path, extra_env: Callable[[], dict[str, str]] | None = None,
                            project_env: Callable[[], dict[str, str]] | None = None):
    """A module-wide SQLite runtime for `project` (adapters do not depend on the store)."""

    @pytest.fixture(scope="module")
    def project_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
        root = project
        if project_env is not None:
            root = tmp_path_factory.mktemp(f"{project.name}-project") / project.name
            shutil.copytree(project, root, ignore=shutil.ignore_patterns("__pycache__", ".outlast"))
            with (root / "pyproject.toml").open("a") as pyproject:
                pyproject.write("\n[tool.outlast.env]\n" + "".join(
                    f"{key} = {json.dumps(value)}\n" for key, value in project_env().items()))
        runtime = runtime_process(tmp_path_factory.mktemp(f"{project.name}-runtime"), None, project=None,
                                  extra_args=["--project", str(root)],
                                  extra_env=extra_env() if extra_env else None)
        try:
            yield runtime.start()
        finally:
            runtime.close()

    return project_runtime


def app_env(runtime: RuntimeProcess, **extra: str) -> dict[str, str]:
    return {"OUTLAST_API_URL": runtime.url, "OUTLAST_SECRET_KEY": SECRET_KEY, **extra}


def load_example(example: str, module: str, env: dict[str, str]) -> ModuleType:
    """Import `examples/<example>/<module>.py` with `env` set, as its own app would start.

    Every example has a `tasks` module; it is imported fresh and then taken out of `sys.modules`
    again so that the next example's `tasks` is its own.
    """
    path = str(EXAMPLES / example)
    names = ("tasks", module)
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    sys.path.insert(0, path)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            return importlib.import_module(module)
    finally:
        sys.path.remove(path)
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def down_url() -> str:
    """A URL where nothing listens: the runtime is down."""
    return f"http://127.0.0.1:{free_port()}"


__all__ = ["EXAMPLES", "app_env", "down_url", "example_runtime_fixture", "load_example", "project_runtime_fixture"]
