"""`outlast worker --deployments`: a node that runs an environment's deployed versions against a remote runtime.

It learns which versions to serve from the worker API, downloads each version's bundle once into
its own data directory (unpacked with the same checks as on the runtime), builds the virtualenv of
its requirements, and runs every claimed attempt on its run's version, through the same
`DeploymentSupervisor` as the runtime's built-in worker. Unpacked versions the runtime no longer
serves are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

import httpx

from outlast._project import Project
from outlast.wire import API_PREFIX, WorkerDeployments

from ..settings import RuntimeSettings
from ..worker.backend import HttpBackend
from ..worker.drain import drain_unless_forced, stop_signals, until_stopped
from .bundles import unpack_bundle
from .deployments import UNPACK_ID, BuildFailed, Served
from .venvs import python_for

log = logging.getLogger("outlast.deployments_worker")
REFRESH_SECONDS = 2.0


class RemoteDeployments:
    """What `DeploymentSupervisor` needs from deployments, over the worker API (called from threads)."""

    def __init__(self, api_url: str, secret_key: str, data_dir: Path) -> None:
        self._http = httpx.Client(base_url=api_url.rstrip("/") + API_PREFIX + "/worker", timeout=httpx.Timeout(
            120, connect=5), headers={"Authorization": f"Bearer {secret_key}"})
        self.versions_dir = Path(data_dir).absolute() / "versions"
        self.venvs_dir = Path(data_dir).absolute() / "venvs"
        self._state = WorkerDeployments(versions=[], task_ids=[], current=[], configs={})
        self._lock = threading.Lock()

    def _fetch(self) -> WorkerDeployments:
        response = self._http.get("/deployments")
        response.raise_for_status()
        self._state = WorkerDeployments.model_validate_json(response.content)
        return self._state

    def served(self) -> Served:
        state = self._fetch()
        return Served(versions=state.versions, task_ids=state.task_ids, env_ids=[])

    def current_versions(self) -> list[str]:
        return list(self._state.current)

    def unpack_id(self, version: str) -> str | None:
        try:
            return (self.versions_dir / version / UNPACK_ID).read_text()
        except FileNotFoundError:
            return None

    def ensure_local(self, version: str) -> tuple[Project, str]:
        config = self._state.configs.get(version) or self._fetch().configs.get(version)
        if config is None:
            raise BuildFailed(f"version {version} is not served by the runtime")
        directory = self.versions_dir / version
        with self._lock:
            if not directory.exists():
                self._download(version, directory)
            requirements = (directory / config["requirements"]).read_text() if config.get("requirements") else ""
            python, _ = python_for(self.venvs_dir, requirements, directory)
        response = self._http.get("/env-vars")
        response.raise_for_status()
        env = {**config.get("env", {}), **response.json()}
        return Project(root=directory, modules=tuple(config["modules"]), env=env), python

    def _download(self, version: str, directory: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="outlast-bundle-") as scratch:
            local = Path(scratch) / "bundle.tar.gz"
            with self._http.stream("GET", f"/deployments/{version}/bundle") as response:
                response.raise_for_status()
                with local.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
            unpack_bundle(local, directory)
        (directory / UNPACK_ID).write_text(uuid.uuid4().hex)

    def collect(self) -> None:
        """Remove unpacked versions the runtime no longer serves."""
        if not self.versions_dir.exists():
            return
        keep = set(self._state.versions)
        for path in self.versions_dir.iterdir():
            if not path.name.startswith(".") and path.name not in keep:
                with self._lock:
                    shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        self._http.close()


def run_deployment_worker(settings: RuntimeSettings, api_url: str, secret_key: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(_serve(settings, api_url, secret_key))


async def _serve(settings: RuntimeSettings, api_url: str, secret_key: str) -> None:
    from rich.console import Console

    from .supervisor import DeploymentSupervisor

    deployments = RemoteDeployments(api_url, secret_key, settings.data_dir)
    backend = HttpBackend(api_url, secret_key, settings.node_id)
    supervisor = DeploymentSupervisor(backend, deployments, settings)  # type: ignore[arg-type]
    await supervisor.start()
    Console(stderr=True).print(f"[bold green]outlast worker[/bold green] {settings.node_id} serving deployed "
                               f"versions ({', '.join(backend.versions or []) or 'none yet'}) for {api_url}")
    stop, forced = asyncio.Event(), asyncio.Event()
    stop_signals(stop, forced)  # as `outlast worker --project`: the first signal drains, a second stops at once
    stopped = asyncio.create_task(until_stopped(stop, supervisor))  # or `outlast worker drain`
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), REFRESH_SECONDS)
        if stop.is_set():
            break
        try:
            await supervisor.refresh()
            await asyncio.to_thread(deployments.collect)
        except Exception as exc:  # the runtime may be restarting
            log.warning("could not refresh the deployed versions: %s", exc)
    await stopped
    await drain_unless_forced(supervisor, settings.drain_grace, forced)
    await supervisor.stop()
    await backend.aclose()
    deployments.close()
