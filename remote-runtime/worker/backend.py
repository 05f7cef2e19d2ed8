"""How a supervisor reaches the run engine: in-process (embedded runtime) or over HTTP (a remote node).

Both speak the same verbs, so the supervisor does not know which one it has.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Protocol

import httpx
from pydantic import TypeAdapter

from outlast.wire import (
    API_PREFIX,
    Assignment,
    ClaimRequest,
    ClaimResponse,
    ErrorBody,
    HeartbeatRequest,
    HeartbeatResponse,
    LeasedAttempt,
    ResumeRequest,
    StreamWrite,
    StreamWritten,
    SuspendRequest,
    TaskManifest,
    TokenCall,
    WaitpointState,
    WaitRequest,
    WaitToken,
    WorkerRegistration,
    WorkerReport,
)

from ..engine.facade import RunEngine
from ..engine.fencing import StaleAttempts
from ..engine.streams import StreamRefused, Streams
from ..store.notify import Wakeup

log = logging.getLogger("outlast.worker")

_WAITPOINT_STATES = TypeAdapter(list[WaitpointState])


class WorkerBackend(Protocol):
    node_id: str

    async def register(self, version: str, manifests: Sequence[TaskManifest]) -> None: ...

    async def import_failed(self, version: str, error: str) -> None: ...

    async def claim(self, limit: int, wait: float) -> list[Assignment]: ...

    async def heartbeat(self, attempts: Sequence[LeasedAttempt]) -> HeartbeatResponse: ...

    async def report(self, report: WorkerReport) -> None: ...

    async def wait(self, request: WaitRequest) -> list[WaitpointState]: ...

    async def suspend(self, request: SuspendRequest) -> bool: ...

    async def resume(self, run_id: str, attempt: int) -> None: ...

    async def token(self, call: TokenCall) -> WaitToken | None: ...

    async def stream(self, write: StreamWrite) -> StreamWritten: ...


class LocalBackend:
    """The supervisor inside the runtime process calls the engine directly (in a worker thread)."""

    def __init__(self, engine: RunEngine, wakeup: Wakeup, node_id: str, env_ids: Sequence[str]) -> None:
        self.engine = engine
        self.wakeup = wakeup
        self.node_id = node_id
        self.env_ids = list(env_ids)
        self.task_ids: list[str] = []
        self._streams: Streams | None = None
        self.versions: list[str] | None = None  # deployed versions this node runs (None: a working copy)

    async def register(self, version: str, manifests: Sequence[TaskManifest]) -> None:
        self.task_ids = [m.id for m in manifests]
        await asyncio.to_thread(self.engine.register_tasks, self.env_ids, version, manifests)

    async def import_failed(self, version: str, error: str) -> None:
        pass  # the runtime in this process asks the working copy itself (state.py `import_problem`)

    async def claim(self, limit: int, wait: float) -> list[Assignment]:
        deadline = time.monotonic() + wait
        while True:
            claimed = await asyncio.to_thread(self.engine.claim, self.node_id, self.env_ids, self.task_ids, limit,
                                              self.versions)
            remaining = deadline - time.monotonic()
            if claimed or remaining <= 0:
                return claimed
            await self.wakeup.wait(remaining)

    async def heartbeat(self, attempts: Sequence[LeasedAttempt]) -> HeartbeatResponse:
        return await asyncio.to_thread(self.engine.heartbeat, self.node_id, attempts)

    async def report(self, report: WorkerReport) -> None:
        report.node_id = self.node_id
        await asyncio.to_thread(self.engine.report, report)

    async def wait(self, request: WaitRequest) -> list[WaitpointState]:
        return await asyncio.to_thread(self.engine.waits.wait, request)

    async def suspend(self, request: SuspendRequest) -> bool:
        return await asyncio.to_thread(self.engine.waits.suspend, request)

    async def resume(self, run_id: str, attempt: int) -> None:
        await asyncio.to_thread(self.engine.waits.resume_in_memory, self.node_id, run_id, attempt)

    async def token(self, call: TokenCall) -> WaitToken | None:
        env_id = (await asyncio.to_thread(self.engine.run_env, call.run_id))
        return await asyncio.to_thread(self.engine.waits.token_call, env_id, call)

    async def stream(self, write: StreamWrite) -> StreamWritten:
        if self._streams is None:
            self._streams = Streams(self.engine.db)
        return await asyncio.to_thread(self._streams.append, write, env_ids=list(self.env_ids))


class HttpBackend:
    """A supervisor on another machine (or `outlast dev` against a remote runtime) uses the worker API."""

    def __init__(self, api_url: str, secret_key: str, node_id: str, timeout: float = 30.0) -> None:
        self.node_id = node_id
        # This process's token in its heartbeats: the runtime knows the node by them (`outlast worker
        # drain` names it) and a drain asked of it is this process's, not a later one's under the same id.
        self.incarnation = uuid.uuid4().hex
        self.task_ids: list[str] = []
        self.versions: list[str] | None = None  # deployed versions this node runs (None: a working copy)
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

    async def import_failed(self, version: str, error: str) -> None:
        """Tell the runtime why the working copy does not import; the dev loop goes on if it cannot be told."""
        try:
            await self._post("/register", WorkerRegistration(node_id=self.node_id, version=version, tasks=[],
                                                             import_error=error[-100_000:]))
        except httpx.HTTPError as exc:
            log.warning("could not tell the runtime that the tasks do not import: %s", exc)

    async def claim(self, limit: int, wait: float) -> list[Assignment]:
        response = await self._post("/claim", ClaimRequest(node_id=self.node_id, task_ids=self.task_ids,
                                                                versions=self.versions, max_runs=limit, wait=wait))
        return ClaimResponse.model_validate_json(response.content).assignments

    async def heartbeat(self, attempts: Sequence[LeasedAttempt]) -> HeartbeatResponse:
        response = await self._post("/heartbeat", HeartbeatRequest(node_id=self.node_id, attempts=list(attempts),
                                                                     incarnation=self.incarnation))
        return HeartbeatResponse.model_validate_json(response.content)

    async def report(self, report: WorkerReport) -> None:
        """Raises StaleAttempts when the runtime refuses entries about attempts this node no longer holds."""
        report.node_id = self.node_id
        try:
            await self._post("/report", report)
        except httpx.HTTPStatusError as exc:
            body = _error_body(exc.response)
            if body is None or body.error != StaleAttempts.code:
                raise
            raise StaleAttempts.from_details(body.details or []) from None

    async def wait(self, request: WaitRequest) -> list[WaitpointState]:
        response = await self._post("/wait", request)
        return _WAITPOINT_STATES.validate_json(response.content)

    async def suspend(self, request: SuspendRequest) -> bool:
        return bool((await self._post("/suspend", request)).json()["requeued"])

    async def resume(self, run_id: str, attempt: int) -> None:
        await self._post("/resume", ResumeRequest(node_id=self.node_id, run_id=run_id, attempt=attempt))

    async def token(self, call: TokenCall) -> WaitToken | None:
        response = await self._post("/token", call)
        return None if response.json() is None else WaitToken.model_validate_json(response.content)

    async def stream(self, write: StreamWrite) -> StreamWritten:
        try:
            response = await self._post("/streams", write)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code not in (404, 409, 413, 422):
                raise
            raise StreamRefused(ErrorBody.model_validate_json(exc.response.content).message) from None
        return StreamWritten.model_validate_json(response.content)

    async def aclose(self) -> None:
        await self._http.aclose()


def _error_body(response: httpx.Response) -> ErrorBody | None:
    try:
        return ErrorBody.model_validate_json(response.content)
    except ValueError:
        return None
