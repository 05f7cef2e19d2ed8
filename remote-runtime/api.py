"""The HTTP API (`/api/v1`): triggering, runs, tasks. The worker endpoints live in worker_api.py."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outlast.wire import (
    API_PREFIX,
    BatchHandle,
    BatchItem,
    BatchTriggerRequest,
    ErrorBody,
    RescheduleRequest,
    Run,
    RunEvent,
    RunHandle,
    RunList,
    RunStatus,
    TaskInfo,
    TaskManifest,
    TriggerRequest,
)

from .errors import EngineError
from .state import RuntimeState

_json = TypeAdapter(Any)


class Unauthorized(EngineError):
    status_code = 401
    code = "unauthorized"


class PayloadTooLarge(EngineError):
    status_code = 413
    code = "payload_too_large"


def state(request: Request) -> RuntimeState:
    return request.app.state.outlast


def environment(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The environment of the request's secret key (`Authorization: Bearer <key>`)."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("missing secret key: send 'Authorization: Bearer <OUTLAST_SECRET_KEY>'",
                           field="authorization")
    env_id = state(request).environments.authenticate(authorization[7:].strip())
    if env_id is None:
        raise Unauthorized("invalid secret key", field="authorization")
    return env_id


Env = Annotated[str, Depends(environment)]
State = Annotated[RuntimeState, Depends(state)]
router = APIRouter(prefix=API_PREFIX)


def _check_payload_sizes(limit: int, items: list[BatchItem]) -> None:
    for index, item in enumerate(items):
        size = len(_json.dump_json(item.payload))
        if size > limit:
            field = f"items.{index}.payload" if len(items) > 1 else "payload"
            raise PayloadTooLarge(f"{field} is {size} bytes; the limit is {limit} bytes", field=field)


@router.post("/tasks/{task_id:path}/trigger", response_model=RunHandle, tags=["tasks"])
def trigger(task_id: str, body: TriggerRequest, env: Env, rt: State) -> RunHandle:
    item = BatchItem(task=task_id, payload=body.payload, options=body.options)
    _check_payload_sizes(rt.settings.max_payload_bytes, [item])
    return rt.engine.trigger(env, [item])[0]


@router.post("/tasks/batch-trigger", response_model=BatchHandle, tags=["tasks"])
def batch_trigger(body: BatchTriggerRequest, env: Env, rt: State) -> BatchHandle:
    _check_payload_sizes(rt.settings.max_payload_bytes, body.items)
    return BatchHandle(runs=rt.engine.trigger(env, body.items))


@router.get("/tasks", response_model=list[TaskInfo], tags=["tasks"])
def list_tasks(env: Env, rt: State) -> list[TaskInfo]:
    return [TaskInfo(id=r.id, version=r.version, queue=r.queue, manifest=TaskManifest.model_validate(r.manifest))
            for r in rt.engine.list_tasks(env)]


@router.get("/runs", response_model=RunList, tags=["runs"])
def list_runs(
    env: Env,
    rt: State,
    status: Annotated[list[RunStatus], Query()] = [],  # noqa: B006 - FastAPI copies query defaults
    task: Annotated[list[str], Query()] = [],  # noqa: B006
    tag: Annotated[list[str], Query()] = [],  # noqa: B006
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> RunList:
    return rt.engine.list_runs(env, status=[s.value for s in status], task=task, tag=tag,
                               created_after=created_after, created_before=created_before,
                               limit=limit, cursor=cursor)


@router.get("/runs/{run_id}", response_model=Run, tags=["runs"])
def retrieve_run(run_id: str, env: Env, rt: State) -> Run:
    return rt.engine.retrieve(env, run_id)


@router.get("/runs/{run_id}/events", response_model=list[RunEvent], tags=["runs"])
def run_events(run_id: str, env: Env, rt: State, after: int = 0) -> list[RunEvent]:
    return rt.engine.events(env, run_id, after=after)


@router.post("/runs/{run_id}/cancel", response_model=Run, tags=["runs"])
def cancel_run(run_id: str, env: Env, rt: State) -> Run:
    return rt.engine.cancel(env, run_id)


@router.post("/runs/{run_id}/replay", response_model=RunHandle, tags=["runs"])
def replay_run(run_id: str, env: Env, rt: State) -> RunHandle:
    return rt.engine.replay(env, run_id)


@router.post("/runs/{run_id}/reschedule", response_model=Run, tags=["runs"])
def reschedule_run(run_id: str, body: RescheduleRequest, env: Env, rt: State) -> Run:
    return rt.engine.reschedule(env, run_id, body.delay)


@router.get("/health", tags=["runtime"])
def health(rt: State) -> dict[str, Any]:
    return {"status": "ok", "database": "sqlite" if rt.db.is_sqlite else "postgresql", "node": rt.settings.node_id}


# --- errors ----------------------------------------------------------------------------------


def _error_response(status: int, body: ErrorBody) -> JSONResponse:
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status)


async def _engine_error(_request: Request, exc: EngineError) -> JSONResponse:
    return _error_response(exc.status_code, ErrorBody(error=exc.code, message=exc.message, field=exc.field))


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    details = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")]
        details.append({"field": ".".join(location), "message": error.get("msg", ""), "type": error.get("type")})
    first = details[0] if details else {"field": None, "message": "invalid request"}
    field = first["field"] or None
    message = f"{field}: {first['message']}" if field else first["message"]
    return _error_response(422, ErrorBody(error="invalid_request", message=message, field=field, details=details))


class BodyLimit:
    """Refuse request bodies over the limit with 413 before they are read into memory."""

    def __init__(self, app: ASGIApp, limit_for: Any) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, limit)
            return
        received = 0
        too_large = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                too_large = True
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _BodyTooLarge:
            if too_large:
                await self._refuse(send, limit)

    @staticmethod
    async def _refuse(send: Send, limit: int) -> None:
        body = ErrorBody(error="payload_too_large", field="payload",
                         message=f"request body exceeds the limit of {limit} bytes").model_dump_json().encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


def create_app(runtime: RuntimeState) -> FastAPI:
    from .worker_api import router as worker_router

    app = FastAPI(title="outlast runtime", version="1", lifespan=runtime.lifespan,
                  openapi_url=f"{API_PREFIX}/openapi.json", docs_url=f"{API_PREFIX}/docs", redoc_url=None)
    app.state.outlast = runtime
    app.include_router(router)
    app.include_router(worker_router)
    app.add_exception_handler(EngineError, _engine_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    settings = runtime.settings
    # A batch may carry up to 1,000 payloads; each is still held to the per-payload limit.
    app.add_middleware(BodyLimit, limit_for=lambda path: settings.max_payload_bytes * (
        10 if path.endswith("/batch-trigger") else 1) + 64 * 1024)
    return app
