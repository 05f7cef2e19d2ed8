"""Where a project's tasks live: `[tool.outlast]` in pyproject.toml, or a `tasks` module by default."""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import ConfigurationError

_IGNORED_DIRS = {".git", ".venv", "venv", "__pycache__", ".outlast", "node_modules", ".pytest_cache"}


@dataclass(frozen=True)
class Project:
    root: Path
    modules: tuple[str, ...] = ("tasks",)
    env: dict[str, str] = field(default_factory=dict)
    requirements: str | None = None  # a requirements file, relative to root (deployments build a venv from it)
    python: str | None = None  # "3.11": the Python version its deployments must run on

    def source_files(self) -> list[Path]:
        files = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if d not in _IGNORED_DIRS)
            files.extend(Path(dirpath) / name for name in sorted(filenames) if name.endswith(".py"))
        return files

    def content_version(self) -> str:
        """A version id for a working copy: `dev-` and a hash of its Python sources."""
        digest = hashlib.sha256()
        for path in self.source_files():
            digest.update(str(path.relative_to(self.root)).encode())
            digest.update(path.read_bytes())
        return "dev-" + digest.hexdigest()[:12]


def load_project(root: str | os.PathLike[str]) -> Project:
    """Read `[tool.outlast]` (keys: `tasks`, a module name or list of them; `env`, a table)."""
    path = Path(root).resolve()
    if not path.is_dir():
        raise ConfigurationError(f"project directory {path} does not exist")
    config: dict = {}
    pyproject = path / "pyproject.toml"
    if pyproject.exists():
        try:
            config = tomllib.loads(pyproject.read_text()).get("tool", {}).get("outlast", {})
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{pyproject} is not valid TOML: {exc}") from None
    modules = config.get("tasks", "tasks")
    modules = (modules,) if isinstance(modules, str) else tuple(modules)
    if not modules or not all(isinstance(m, str) and m for m in modules):
        raise ConfigurationError(f"[tool.outlast] tasks in {pyproject} must name one or more modules")
    for module in modules:
        top = path / module.split(".")[0]
        if not (top.with_suffix(".py").exists() or (top / "__init__.py").exists()):
            raise ConfigurationError(
                f"tasks module {module!r} not found in {path}: create {top.name}.py or {top.name}/__init__.py, "
                "or name your modules in [tool.outlast] tasks = [...] in pyproject.toml"
            )
    env = {str(k): str(v) for k, v in config.get("env", {}).items()}
    requirements = config.get("requirements")
    if requirements is None and (path / "requirements.txt").is_file():
        requirements = "requirements.txt"
    if requirements is not None and not (isinstance(requirements, str) and (path / requirements).is_file()):
        raise ConfigurationError(f"[tool.outlast] requirements = {requirements!r}: no such file in {path}")
    python = config.get("python")
    if python is not None and not (isinstance(python, str) and python.replace(".", "").isdigit()):
        raise ConfigurationError(f"[tool.outlast] python must be a version such as \"3.11\", got {python!r}")
    return Project(root=path, modules=modules, env=env, requirements=requirements, python=python)
