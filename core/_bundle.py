"""Pack a project into a deployment bundle: a reproducible tar.gz of its files.

Reproducible (sorted entries, fixed times and owners), so two deploys of the same tree upload
the same bytes. Left out: the directories `_project` ignores (.git, .venv, .outlast, ...),
compiled files, and symlinks that point outside the project (the runtime would refuse them).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from ._project import _IGNORED_DIRS, Project

_SKIPPED_SUFFIXES = (".pyc", ".pyo")


@dataclass
class BundlePlan:
    """What `outlast deploy` would ship."""

    project: Project
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, why)

    @property
    def total_bytes(self) -> int:
        return sum(p.lstat().st_size for p in self.files if not p.is_symlink())


def plan_bundle(project: Project) -> BundlePlan:
    plan = BundlePlan(project)
    root = project.root
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _IGNORED_DIRS and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.endswith(_SKIPPED_SUFFIXES):
                continue
            if path.is_symlink():
                target = os.readlink(path)
                if os.path.isabs(target) or ".." in Path(target).parts:
                    plan.skipped.append((path, f"symlink to {target} (outside the project)"))
                    continue
            elif not path.is_file():
                plan.skipped.append((path, "not a regular file"))
                continue
            plan.files.append(path)
    return plan


def pack_bundle(plan: BundlePlan) -> bytes:
    """The bundle's bytes (tar.gz)."""
    raw = io.BytesIO()
    # mtime=0 in the gzip header too: the same files always give the same bytes.
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for path in plan.files:
            name = path.relative_to(plan.project.root).as_posix()
            info = tar.gettarinfo(str(path), arcname=name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if info.issym():
                tar.addfile(info)
            else:
                with path.open("rb") as f:
                    tar.addfile(info, f)
    return raw.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_info(root: Path) -> tuple[str | None, str | None]:
    """(commit, branch) of the checkout holding `root`, or (None, None) outside git."""
    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() or None if out.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    branch = run("rev-parse", "--abbrev-ref", "HEAD") if commit else None
    return commit, None if branch == "HEAD" else branch
