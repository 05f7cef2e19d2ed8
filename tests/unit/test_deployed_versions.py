"""Which deployed-version processes may be reused: a change of environment variables while a process
is being started must not let that process (started with the old values) run the next attempt."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from outlast._project import Project
from outlast.runtime.deploy.deployments import Served
from outlast.runtime.deploy.supervisor import DeployedVersions
from outlast.runtime.worker.processes import TaskProcess


class SlowDeployments:
    """One served version whose local copy is read slowly (the reading waits for `release`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.reading = threading.Event()
        self.release = threading.Event()

    def served(self) -> Served:
        return Served(versions=["v1"], task_ids=["t"], env_ids=[])

    def current_versions(self) -> list[str]:
        return ["v1"]

    def ensure_local(self, version: str) -> tuple[Project, str]:
        self.reading.set()
        assert self.release.wait(10)
        return Project(root=self.root), "/usr/bin/python3"

    def unpack_id(self, version: str) -> str | None:
        return "unpack-1"


class StubPool:
    def __init__(self) -> None:
        self.forkservers: dict[str, Any] = {}
        self.closed: list[str] = []

    def retire_idle(self, which: Any) -> None: ...

    def close_forkserver(self, version: str) -> None:
        self.closed.append(version)

    def fill(self) -> None: ...


def process_from(origin: object) -> TaskProcess:
    return TaskProcess(process_id="p1", version="v1", popen=None, ready=None, origin=origin)  # type: ignore[arg-type]


def test_a_process_whose_variables_changed_while_it_started_is_not_reused(tmp_path: Path) -> None:
    asyncio.run(_variables_change_while_a_process_starts(tmp_path))


async def _variables_change_while_a_process_starts(tmp_path: Path) -> None:
    deployments = SlowDeployments(tmp_path)
    versions = DeployedVersions(deployments, backend=SimpleNamespace())  # type: ignore[arg-type]
    pool = StubPool()
    await versions.refresh(pool)  # type: ignore[arg-type]

    starting = asyncio.ensure_future(versions.project_for(pool, "v1"))  # type: ignore[arg-type]
    assert await asyncio.to_thread(deployments.reading.wait, 10)
    await versions.refresh(pool, recycle=True)  # `PUT /env-vars/X` while the old values are being read
    deployments.release.set()
    source = await starting

    assert not versions.reusable(process_from(source.origin))
    fresh = await versions.project_for(pool, "v1")  # type: ignore[arg-type]
    assert versions.reusable(process_from(fresh.origin))
