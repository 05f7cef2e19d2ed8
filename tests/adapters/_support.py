"""Adapter tests: a runtime running an example app's tasks, and that example imported in the test process."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import ROOT, SECRET_KEY, RuntimeProcess, free_port, runtime_process

EXAMPLES = ROOT / "examples"


def example_runtime_fixture(example: str, extra_env: Callable[[], dict[str, str]] | None = None):
    """A module-wide SQLite runtime whose project is `examples/<example>`: it runs that app's tasks."""
    return project_runtime_fixture(EXAMPLES / example, extra_env)


def project_runtime_fixture(project: Path, extra_env: Callable[[], dict[str, str]] | None = None):
    """A module-wide SQLite runtime for `project` (adapters do not depend on the store)."""

    @pytest.fixture(scope="module")
    def project_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
        runtime = runtime_process(tmp_path_factory.mktemp(f"{project.name}-runtime"), None, project=None,
                                  extra_args=["--project", str(project)],
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
