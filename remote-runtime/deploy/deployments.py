"""Deployments: immutable versions of an environment's task code, built once and promoted.

A deploy stores the uploaded bundle (through the bundle store), numbers it `YYYYMMDD.N`, and
builds it in a worker thread: unpack safely into `<data_dir>/versions/<version>`, build (or
reuse) the virtualenv of its requirements, import its tasks in a fresh process that records
each task's id and config, then promote it (its tasks become the environment's; new runs are
locked to it). Any failure marks the deployment FAILED with the reason and leaves the current
version as it was.

A version's files stay on disk while it is current or any of its runs is unfinished; `collect`
removes them after that (the bundle stays in the store, so a rollback unpacks it again).
"""

# long-module: one deployment's whole life (create, build, promote, serve, collect) shares the
# deployments table's row helpers and the per-version locks; splitting the build out is next.

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from outlast._errors import ConfigurationError
from outlast._project import Project, load_project
from outlast.wire import BatchItem, DeployedTask, Deployment, DeploymentStatus, RunStatus, TaskManifest

from ..engine.facade import RunEngine
from ..engine.scope import EnvScope
from ..errors import Conflict, EngineError
from ..store.schema import deployments, environments, runs, tasks
from ..worker.host_environment import host_environment
from .bundles import BundleError, BundleStore, inspect_bundle, unpack_bundle
from .env_vars import EnvVars
from .venvs import EnvironmentBuildFailed, python_for, requirements_hash

log = logging.getLogger("outlast.deployments")
IMPORT_TIMEOUT = 300
UNPACK_ID = ".outlast-unpacked"
STALE_BUILD_SECONDS = 1800  # longer than any build: pip's timeout plus the import step's
_LIVE = [s.value for s in RunStatus if not s.is_final]
D = DeploymentStatus


class DeploymentNotFound(EngineError):
    status_code = 404
    code = "deployment_not_found"


class BuildFailed(Exception):
    """A step of the build failed; the message is what the user sees."""


@dataclass(frozen=True)
class Served:
    """What a deployment worker runs: these versions, of these tasks, in these environments."""

    versions: list[str]
    task_ids: list[str]
    env_ids: list[str]


def deployed_manifests(c: sa.Connection, env_id: str, version: str) -> dict[str, tuple[TaskManifest, str]]:
    """The tasks a READY version of the environment declares (the engine's lookup for runs locked to it)."""
    row = c.execute(sa.select(deployments.c.manifests).where(
        deployments.c.version == version, deployments.c.env_id == env_id,
        deployments.c.status == D.READY.value)).first()
    if row is None:
        return {}
    return {m["id"]: (TaskManifest.model_validate(m), version) for m in row.manifests}


class Deployments:
    def __init__(self, engine: RunEngine, env_vars: EnvVars, store: BundleStore, data_dir: Path) -> None:
        self.engine = engine
        self.db = engine.db
        self.env_vars = env_vars
        self.store = store
        self.versions_dir = Path(data_dir).absolute() / "versions"
        self.venvs_dir = Path(data_dir).absolute() / "venvs"
        self.on_change: Callable[[], None] = lambda: None  # set by the runtime: refresh the deployment worker
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    # --- deploying -------------------------------------------------------------------------

    def create(self, env_id: str, bundle: Path, *, commit: str | None = None,
               branch: str | None = None) -> Deployment:
        """Check and store an uploaded bundle; returns its BUILDING deployment (then call `build`)."""
        summary = inspect_bundle(bundle)  # refuse unsafe bundles before anything is stored
        with bundle.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        size = bundle.stat().st_size
        for _ in range(20):
            now = time.time()
            version = self._next_version(now)
            key = f"{env_id}/{version}"
            try:
                with EnvScope(self.db, env_id).begin() as c:
                    c.execute(deployments.insert().values(
                        version=version, env_id=env_id, status=D.BUILDING.value, git_commit=commit,
                        git_branch=branch, bundle_key=key, bundle_sha256=digest, bundle_bytes=size,
                        files=summary.files, config={}, manifests=[], step="storing", created_at=now))
                break
            except sa.exc.IntegrityError:  # another deploy took this number first
                continue
        else:
            raise Conflict("could not allocate a version number; try again", field="version")
        try:
            self.store.put(key, bundle)
        except (BundleError, OSError) as exc:
            self._fail(version, f"could not store the bundle in {self.store.describe()}: {exc}")
        else:
            self._step(version, "queued")
        return self.get(env_id, version)

    def _next_version(self, now: float) -> str:
        day = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")
        with self.db.connect() as c:
            taken = c.execute(sa.select(deployments.c.version).where(deployments.c.version.like(f"{day}.%"))).scalars()
            highest = max((int(v.split(".", 1)[1]) for v in taken if v.split(".", 1)[1].isdigit()), default=0)
        return f"{day}.{highest + 1}"

    def build(self, version: str) -> None:
        """Unpack, build the environment, import, promote. Never raises: failures are recorded."""
        row = self._row(version)
        if row.status != D.BUILDING.value:
            return
        directory = self.versions_dir / version
        try:
            self._step(version, "unpacking")
            self._unpack(row, directory)
            project = self._project(directory)
            self._save(version, config={"modules": list(project.modules), "env": project.env,
                                        "requirements": project.requirements, "python": project.python})
            self._step(version, "building environment")
            requirements = (directory / project.requirements).read_text() if project.requirements else ""
            # Recorded first: garbage collection keeps the environments that deployments name.
            self._save(version, requirements_hash=requirements_hash(requirements) if requirements.strip() else None)
            python, _ = python_for(self.venvs_dir, requirements, directory)
            self._step(version, "importing tasks")
            manifests = self._import(row.env_id, project, python)
            self._save(version, manifests=[m.model_dump(mode="json") for m in manifests])
            self._step(version, "promoting")
            with self.db.begin() as c:
                c.execute(deployments.update().where(deployments.c.version == version).values(
                    status=D.READY.value, built_at=time.time(), step="built"))
            self.promote(row.env_id, version)
        except (BuildFailed, BundleError, EnvironmentBuildFailed, ConfigurationError) as exc:
            shutil.rmtree(directory, ignore_errors=True)
            self._fail(version, str(exc))
        except Exception as exc:  # a bug or an I/O error: still never leave a deploy BUILDING
            log.exception("deployment %s failed", version)
            shutil.rmtree(directory, ignore_errors=True)
            self._fail(version, f"{type(exc).__name__}: {exc}")

    def _unpack(self, row: Any, directory: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="outlast-bundle-") as scratch:
            local = Path(scratch) / "bundle.tar.gz"
            self.store.get(row.bundle_key, local)
            if directory.exists():
                shutil.rmtree(directory)
            unpack_bundle(local, directory)
        # Tells this unpacking from a later one at the same path (inode numbers get reused).
        (directory / UNPACK_ID).write_text(uuid.uuid4().hex)

    def unpack_id(self, version: str) -> str | None:
        """Which unpacking of the version is on disk now (None: none is)."""
        try:
            return (self.versions_dir / version / UNPACK_ID).read_text()
        except FileNotFoundError:
            return None

    @staticmethod
    def _project(directory: Path) -> Project:
        project = load_project(directory)
        wanted = project.python
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        if wanted and not (here == wanted or here.startswith(wanted + ".") or wanted.startswith(here + ".")):
            raise BuildFailed(f"[tool.outlast] python = {wanted!r}, but this runtime runs Python {here}")
        return project

    def _import(self, env_id: str, project: Project, python: str) -> list[TaskManifest]:
        """Import the tasks in a fresh process with the version's interpreter and environment."""
        env = host_environment()
        env.update(project.env)
        env.update(self.env_vars.values(env_id))
        with tempfile.TemporaryDirectory(prefix="outlast-import-") as scratch:
            out = Path(scratch) / "manifest.json"
            argv = [python, "-m", "outlast._manifest", str(project.root), ",".join(project.modules), str(out)]
            try:
                done = subprocess.run(argv, cwd=project.root, env=env, capture_output=True, text=True,
                                      timeout=IMPORT_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise BuildFailed(f"importing the tasks took longer than {IMPORT_TIMEOUT}s") from None
            result = json.loads(out.read_text()) if out.exists() else {}
        if "error" in result:
            raise BuildFailed(f"importing the tasks failed:\n{result['error']}")
        if done.returncode != 0 or "tasks" not in result:
            raise BuildFailed(f"the import step exited with code {done.returncode}:\n{(done.stderr or '')[-4000:]}")
        manifests = [TaskManifest.model_validate(m) for m in result["tasks"]]
        if not manifests:
            raise BuildFailed(f"no tasks found in {', '.join(project.modules)}: declare them with @task")
        return manifests

    # --- promotion -------------------------------------------------------------------------

    def promote(self, env_id: str, version: str | None = None, *, commit: str | None = None) -> Deployment:
        """Make a READY version (or the newest one built from `commit`) current for its environment."""
        if version is None:
            if not commit:
                raise EngineError("name a version or a commit to promote", field="version")
            version = self.version_for_commit(env_id, commit)
            if version is None:
                raise DeploymentNotFound(f"no task version was deployed from commit {commit} in environment "
                                         f"{env_id!r}; run `outlast deploy` for that commit first", field="commit")
        row = self._row(version, env_id)
        if row.status != D.READY.value:
            raise Conflict(f"version {version} is {row.status}; only READY versions can be promoted", field="version")
        manifests = [TaskManifest.model_validate(m) for m in row.manifests]
        self.engine.register_tasks([env_id], version, manifests)
        scope = EnvScope(self.db, env_id)
        with scope.begin() as c:
            # The environment now has exactly this version's tasks.
            c.execute(scope.delete(tasks).where(tasks.c.version != version))
            c.execute(scope.update(deployments).where(deployments.c.version == version).values(promoted_at=time.time()))
        self.on_change()
        return self.get(env_id, version)

    def rollback(self, env_id: str) -> Deployment:
        """Promote the READY version that was current before the current one."""
        current = self._current(env_id)
        scope = EnvScope(self.db, env_id)
        with scope.connect() as c:
            rows = c.execute(scope.select(deployments.c.version).where(
                deployments.c.status == D.READY.value,
                deployments.c.promoted_at.is_not(None), deployments.c.version != (current or ""))
                .order_by(deployments.c.promoted_at.desc()).limit(1)).scalars().all()
        if not rows:
            raise Conflict(f"environment {env_id!r} has no earlier version to roll back to", field="version")
        return self.promote(env_id, rows[0])

    def version_for_commit(self, env_id: str, commit: str) -> str | None:
        """The newest READY version of the environment built from `commit` (a full sha or a 7+ prefix)."""
        commit = commit.strip().lower()
        if len(commit) < 7:
            return None
        scope = EnvScope(self.db, env_id)
        with scope.connect() as c:
            rows = c.execute(scope.select(deployments.c.version, deployments.c.git_commit).where(
                deployments.c.status == D.READY.value,
                deployments.c.git_commit.is_not(None)).order_by(deployments.c.created_at.desc())).all()
        return next((r.version for r in rows if r.git_commit.lower().startswith(commit)
                     or commit.startswith(r.git_commit.lower())), None)

    def pin(self, env_id: str, items: list[BatchItem], commit: str | None) -> list[BatchItem]:
        """Lock runs triggered by code at `commit` to the version built from it (when there is one and the
        trigger names no version), so a web app and its tasks never skew during a rollout."""
        version = self.version_for_commit(env_id, commit) if commit else None
        if version is None:
            return items
        return [item if item.options.version else item.model_copy(update={
            "options": item.options.model_copy(update={"version": version})}) for item in items]

    # --- reading ---------------------------------------------------------------------------

    def get(self, env_id: str, version: str) -> Deployment:
        return self._public(self._row(version, env_id), self._current(env_id))

    def list(self, env_id: str, limit: int = 50) -> list[Deployment]:
        scope = EnvScope(self.db, env_id)
        with scope.connect() as c:
            rows = c.execute(scope.select(deployments).order_by(deployments.c.created_at.desc()).limit(limit)).all()
        current = self._current(env_id)
        return [self._public(r, current) for r in rows]

    def _current(self, env_id: str) -> str | None:
        with self.db.connect() as c:
            return c.execute(sa.select(environments.c.current_version).where(environments.c.id == env_id)).scalar()

    def _row(self, version: str, env_id: str | None = None) -> Any:
        """A version's row: of environment `env_id` only (a caller's), or of any (the builder's)."""
        if env_id is None:
            with self.db.connect() as c:
                row = c.execute(sa.select(deployments).where(deployments.c.version == version)).first()
        else:
            scope = EnvScope(self.db, env_id)
            with scope.connect() as c:
                row = c.execute(scope.select(deployments).where(deployments.c.version == version)).first()
        if row is None:
            raise DeploymentNotFound(f"no deployment {version!r}" + (f" in environment {env_id!r}" if env_id else ""),
                                     field="version")
        return row

    @staticmethod
    def _public(row: Any, current: str | None) -> Deployment:
        def dt(value: float | None) -> datetime | None:
            return None if value is None else datetime.fromtimestamp(value, UTC)

        return Deployment(
            version=row.version, env=row.env_id, status=D(row.status), current=row.version == current,
            git_commit=row.git_commit, git_branch=row.git_branch, requirements_hash=row.requirements_hash,
            bundle_sha256=row.bundle_sha256, bundle_bytes=row.bundle_bytes, files=row.files,
            tasks=[DeployedTask(id=m["id"], queue=(m.get("queue") or {}).get("name")) for m in row.manifests],
            step=row.step, error=row.error, on_disk=row.collected_at is None and row.status == D.READY.value,
            created_at=dt(row.created_at), built_at=dt(row.built_at), promoted_at=dt(row.promoted_at))

    def _step(self, version: str, step: str) -> None:
        self._save(version, step=step)

    def _save(self, version: str, **values: Any) -> None:
        with self.db.begin() as c:
            c.execute(deployments.update().where(deployments.c.version == version).values(**values))

    def _fail(self, version: str, error: str) -> None:
        log.warning("deployment %s failed: %s", version, error)
        self._save(version, status=D.FAILED.value, step="failed", error=error, collected_at=time.time())

    def fail_abandoned(self, older_than: float = STALE_BUILD_SECONDS) -> None:
        """Builds cut off by a restart never finish: say so, so no deploy stays BUILDING forever."""
        with self.db.connect() as c:
            stale = c.execute(sa.select(deployments.c.version).where(
                deployments.c.status == D.BUILDING.value,
                deployments.c.created_at < time.time() - older_than)).scalars().all()
        for version in stale:
            self._fail(version, "the build did not finish (the runtime building it stopped); deploy again")

    # --- serving ---------------------------------------------------------------------------

    def served(self) -> Served:
        """READY versions still on disk or with unfinished runs, their tasks and environments."""
        with self.db.connect() as c:
            rows = c.execute(sa.select(deployments.c.version, deployments.c.env_id, deployments.c.manifests,
                                       deployments.c.collected_at)
                             .where(deployments.c.status == D.READY.value)).all()
            live = set(c.execute(sa.select(runs.c.version).distinct().where(
                runs.c.status.in_(_LIVE), runs.c.version.in_([r.version for r in rows]))).scalars()) if rows else set()
        chosen = [r for r in rows if r.collected_at is None or r.version in live]
        return Served(versions=sorted(r.version for r in chosen),
                      task_ids=sorted({m["id"] for r in chosen for m in r.manifests}),
                      env_ids=sorted({r.env_id for r in chosen}))

    def served_in(self, env_id: str) -> tuple[Served, list[str], dict[str, dict[str, Any]]]:
        """What a remote worker of the environment serves: versions, current ones, their configs."""
        served = self.served()
        scope = EnvScope(self.db, env_id)
        with scope.connect() as c:
            rows = c.execute(scope.select(deployments.c.version, deployments.c.config, deployments.c.manifests)
                             .where(deployments.c.version.in_(served.versions))).all()
            tasks_of = {r.version: r.manifests for r in rows}
        mine = sorted(r.version for r in rows)
        current = self._current(env_id)
        return (Served(versions=mine, task_ids=sorted({m["id"] for v in mine for m in tasks_of[v]}), env_ids=[env_id]),
                [current] if current in mine else [], {r.version: r.config for r in rows})

    def bundle(self, env_id: str, version: str, dest: Path) -> None:
        """Copy a version's bundle out of the store (for a remote worker)."""
        row = self._row(version, env_id)
        self.store.get(row.bundle_key, dest)

    def current_versions(self) -> list[str]:
        with self.db.connect() as c:
            current = c.execute(sa.select(environments.c.current_version)).scalars().all()
            return sorted(c.execute(sa.select(deployments.c.version).where(
                deployments.c.version.in_([v for v in current if v]))).scalars())

    def ensure_local(self, version: str) -> tuple[Project, str]:
        """The version's project (its env vars applied) and interpreter, unpacking it again if collected."""
        row = self._row(version)
        if row.status != D.READY.value:
            raise BuildFailed(f"version {version} is {row.status}, not runnable")
        directory = self.versions_dir / version
        with self._lock(version):
            if not directory.exists():
                self._unpack(row, directory)
                self._save(version, collected_at=None)
            config = row.config
            requirements = (directory / config["requirements"]).read_text() if config.get("requirements") else ""
            python, _ = python_for(self.venvs_dir, requirements, directory)
        env = {**config.get("env", {}), **self.env_vars.values(row.env_id)}
        return Project(root=directory, modules=tuple(config["modules"]), env=env), python

    def _lock(self, version: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(version, threading.Lock())

    # --- garbage collection ----------------------------------------------------------------

    def collect(self) -> list[str]:
        """Remove the files of versions that are not current and have no unfinished run; returns them."""
        with self.db.connect() as c:
            current = {v for v in c.execute(sa.select(environments.c.current_version)).scalars() if v}
            candidates = [v for v in c.execute(sa.select(deployments.c.version).where(
                deployments.c.status == D.READY.value, deployments.c.collected_at.is_(None))).scalars()
                if v not in current]
            live = set(c.execute(sa.select(runs.c.version).distinct().where(
                runs.c.status.in_(_LIVE), runs.c.version.in_(candidates))).scalars()) if candidates else set()
        collected = []
        for version in candidates:
            if version in live:
                continue
            with self._lock(version):  # ensure_local unpacks under the same lock
                if not self._collectable(version):  # promoted or triggered since the scan
                    continue
                shutil.rmtree(self.versions_dir / version, ignore_errors=True)
                self._save(version, collected_at=time.time())
            collected.append(version)
        self._collect_venvs()
        if collected:
            log.info("garbage-collected versions %s", ", ".join(collected))
            self.on_change()
        return collected

    def _collectable(self, version: str) -> bool:
        with self.db.connect() as c:
            current = c.execute(sa.select(environments.c.id).where(environments.c.current_version == version)).first()
            live = c.execute(sa.select(runs.c.id).where(runs.c.version == version, runs.c.status.in_(_LIVE))
                             .limit(1)).first()
            row = c.execute(sa.select(deployments.c.collected_at).where(deployments.c.version == version)).first()
        return current is None and live is None and row is not None and row.collected_at is None

    def _collect_venvs(self) -> None:
        if not self.venvs_dir.exists():
            return
        with self.db.connect() as c:
            used = set(c.execute(sa.select(deployments.c.requirements_hash).where(
                deployments.c.collected_at.is_(None) | (deployments.c.status == D.BUILDING.value))).scalars())
        for path in self.venvs_dir.iterdir():
            if not path.name.startswith(".") and path.name not in used:
                shutil.rmtree(path, ignore_errors=True)
