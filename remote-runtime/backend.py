"""How a supervisor reaches the run engine: in-process (embedded runtime) or over HTTP (a remote node).

Both speak the same four verbs, so the supervisor does not know which one it has.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

import httpx

from outlast.wire import (
    API_PREFIX,
    Assignment,
    ClaimRequest,
    ClaimResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    LeasedAttempt,
    TaskManifest,
    WorkerRegistration,
    WorkerReport,
)

from .engine import RunEngine
from .notify import Wakeup


class WorkerBackend(Protocol):
    node_id: str

    async def register(self, version: str, manifests: Sequence[TaskManifest]) -> None: ...

    async def claim(self, limit: int, wait: float) -> list[Assignment]: ...

    async def heartbeat(self, attempts: Sequence[LeasedAttempt]) -> list[str]: ...

    async def report(self, report: WorkerReport) -> None: ...


class LocalBackend:
    """The supervisor inside the runtime process calls the engine directly (in a worker thread)."""

    def __init__(self, engine: RunEngine, wakeup: Wakeup, node_id: str, env_ids: Sequence[str]) -> None:
        self.engine = engine
        self.wakeup = wakeup
        self.node_id = node_id
        self.env_ids = list(env_ids)
        self.task_ids: list[str] = []

    async def register(self, version: str, manifests: Sequence[TaskManifest]) -> None:
        self.task_ids = [m.id for m in manifests]
        await asyncio.to_thread(self.engine.register_tasks, self.env_ids, version, manifests)

    async def claim(self, limit: int, wait: float) -> list[Assignment]:
        deadline = time.monotonic() + wait
        while True:
            claimed = await asyncio.to_thread(self.engine.claim, self.node_id, self.env_ids, self.task_ids, limit)
            remaining = deadline - time.monotonic()
            if claimed or remaining <= 0:
                return claimed
            await self.wakeup.wait(remaining)

    async def heartbeat(self, attempts: Sequence[LeasedAttempt]) -> list[str]:
        return await asyncio.to_thread(self.engine.heartbeat, self.node_id, attempts)

    async def report(self, report: WorkerReport) -> None:
        await asyncio.to_thread(self.engine.report, report)


class HttpBackend:
    """A supervisor on another machine (or `outlast dev` against a remote runtime) uses the worker API."""

    def __init__(self, api_url: str, secret_key: str, node_id: str, timeout: float = 30.0) -> None:
        self.node_id = node_id
        self.task_ids: list[str] = []
        self._http = httpx.AsyncClient(
            base_url=api_url.rstrip("/") + API_PREFIX + "/worker",
            headers={"Authorization": f"Bearer {secret_key}"},
            timeout=httpx.Timeout(timeout + 35, connect=5.0),  # claims long-poll for up to `wait`
        )

    async def _post(self, path: str, body: object) -> httpx.Response:
        response = await self._http.post(path, content=body.model_dump_json(),  # type: ignore[attr-defined]
                                         headers={"content-type": "application/json"})
        response.raise_for_status()
        return response

    async def register(self, version: str, manifests: Sequence[TaskManifest]) -> None:
        self.task_ids = [m.id for m in manifests]
        await self._post("/register", WorkerRegistration(node_id=self.node_id, version=version, tasks=list(manifests)))

    async def claim(self, limit: int, wait: float) -> list[Assignment]:
        response = await self._post("/claim", ClaimRequest(node_id=self.node_id, task_ids=self.task_ids,
                                                                max_runs=limit, wait=wait))
        return ClaimResponse.model_validate_json(response.content).assignments

    async def heartbeat(self, attempts: Sequence[LeasedAttempt]) -> list[str]:
        response = await self._post("/heartbeat", HeartbeatRequest(node_id=self.node_id, attempts=list(attempts)))
        return HeartbeatResponse.model_validate_json(response.content).stop

    async def report(self, report: WorkerReport) -> None:
        await self._post("/report", report)

    async def aclose(self) -> None:
        await self._http.aclose()
