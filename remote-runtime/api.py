"""The HTTP API (`/api/v1`): triggering, runs, tasks. The worker endpoints live in worker_api.py."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outlast.wire import (
    API_PREFIX,
    COMMIT_HEADER,
    BatchHandle,
    BatchItem,
    BatchTriggerRequest,
    ErrorBody,
    PublicToken,
    PublicTokenRequest,
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
from .public_tokens import PublicTokens, allows, is_public_token
from .state import RuntimeState

_json = TypeAdapter(Any)


class Unauthorized(EngineError):
    status_code = 401
    code = "unauthorized"


class PayloadTooLarge(EngineError):
    status_code = 413
    code = "payload_too_large"


# Dependencies are coroutines: no I/O of note, and a sync one would cost a thread hop per request.
async def state(request: Request) -> RuntimeState:
    return request.app.state.outlast


async def environment(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The environment of the request's secret key (`Authorization: Bearer <key>`)."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("missing secret key: send 'Authorization: Bearer <OUTLAST_SECRET_KEY>'",
                           field="authorization")
    env_id = request.app.state.outlast.environments.authenticate(authorization[7:].strip())
    if env_id is None:
        raise Unauthorized("invalid secret key", field="authorization")
    return env_id


async def run_reader(request: Request, run_id: str, authorization: Annotated[str | None, Header()] = None) -> str:
    """The environment of a secret key, or of a public token whose scope covers `run_id`."""
    credential = (authorization or "")[7:].strip()
    if not is_public_token(credential):
        return await environment(request, authorization)
    claims = request.app.state.public_tokens.verify(credential)
    if not allows(claims, run_id, lambda: request.app.state.outlast.engine.retrieve(claims["env"], run_id).tags):
        raise Unauthorized("this public token does not cover that run", field="authorization")
    return claims["env"]


Env = Annotated[str, Depends(environment)]
ReadEnv = Annotated[str, Depends(run_reader)]
State = Annotated[RuntimeState, Depends(state)]
router = APIRouter(prefix=API_PREFIX)


def _check_payload_sizes(limit: int, items: list[BatchItem]) -> None:
    for index, item in enumerate(items):
        size = len(_json.dump_json(item.payload))
        if size > limit:
            field = f"items.{index}.payload" if len(items) > 1 else "payload"
            raise PayloadTooLarge(f"{field} is {size} bytes; the limit is {limit} bytes", field=field)


# The git commit of the triggering code (the SDK sends it on Vercel): runs use the version built from it.
Commit = Annotated[str | None, Header(alias=COMMIT_HEADER, max_length=64)]


@router.post("/tasks/{task_id:path}/trigger", response_model=RunHandle, tags=["tasks"])
def trigger(task_id: str, body: TriggerRequest, env: Env, rt: State, commit: Commit = None) -> RunHandle:
    item = BatchItem(task=task_id, payload=body.payload, options=body.options)
    _check_payload_sizes(rt.settings.max_payload_bytes, [item])
    return rt.engine.trigger(env, rt.deployments.pin(env, [item], commit))[0]


@router.post("/tasks/batch-trigger", response_model=BatchHandle, tags=["tasks"])
def batch_trigger(body: BatchTriggerRequest, env: Env, rt: State, commit: Commit = None) -> BatchHandle:
    _check_payload_sizes(rt.settings.max_payload_bytes, body.items)
    return BatchHandle(runs=rt.engine.trigger(env, rt.deployments.pin(env, body.items, commit)))


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
def retrieve_run(run_id: str, env: ReadEnv, rt: State) -> Run:
    return rt.engine.retrieve(env, run_id)


@router.get("/runs/{run_id}/events", response_model=list[RunEvent], tags=["runs"])
def run_events(run_id: str, env: ReadEnv, rt: State, after: int = 0) -> list[RunEvent]:
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


@router.post("/auth/public-tokens", response_model=PublicToken, tags=["auth"])
def create_public_token(body: PublicTokenRequest, env: Env, rt: State, request: Request) -> PublicToken:
    """A short-lived token a browser may use to read these runs (or runs with these tags), and nothing else."""
    for index, run_id in enumerate(body.runs):
        try:
            rt.engine.retrieve(env, run_id)
        except EngineError as exc:
            raise type(exc)(exc.message, field=f"runs.{index}") from None
    return request.app.state.public_tokens.mint(env, body)


@router.get("/health", tags=["runtime"])
def health(rt: State) -> dict[str, Any]:
    body = {"status": "ok", "database": "sqlite" if rt.db.is_sqlite else "postgresql", "node": rt.settings.node_id}
    supervisor = rt.supervisor or rt.deployed_supervisor
    if supervisor is not None:  # how this node's waiting runs are held
        problem = supervisor.checkpoint_problem
        body["checkpoints"] = {"enabled": not problem, **({"reason": problem} if problem else {})}
    return body


# --- errors ----------------------------------------------------------------------------------


def _error_response(status: int, body: ErrorBody) -> JSONResponse:
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status)


async def _engine_error(_request: Request, exc: EngineError) -> JSONResponse:
    return _error_response(exc.status_code, ErrorBody(error=exc.code, message=exc.message, field=exc.field))


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    details = []
    for error in exc.errors():
        loc = list(error.get("loc", ()))
        source = loc.pop(0) if loc and loc[0] in ("body", "query", "path", "header") else None
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        if error.get("type") == "json_invalid":
            # loc is ("body", <character offset>): name the body, and say where the JSON broke.
            reason = (error.get("ctx") or {}).get("error") or message
            at = f" at character {loc[0]}" if loc and isinstance(loc[0], int) else ""
            loc, message = [], f"request body is not valid JSON: {reason}{at}"
        field = ".".join(str(part) for part in loc) or source
        details.append({"field": field, "message": message, "type": error.get("type")})
    first = details[0] if details else {"field": None, "message": "invalid request"}
    field = first["field"] or None
    message = first["message"] if not field or first["type"] == "json_invalid" else f"{field}: {first['message']}"
    return _error_response(422, ErrorBody(error="invalid_request", message=message, field=field, details=details))


async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Routing errors (unknown path, wrong method) answer with the same body as every other error.
    codes = {404: "not_found", 405: "method_not_allowed"}
    body = ErrorBody(error=codes.get(exc.status_code, "http_error"), message=str(exc.detail))
    response = _error_response(exc.status_code, body)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _internal_error(_request: Request, exc: Exception) -> JSONResponse:
    # Details stay in the runtime's log (Starlette logs the exception after this answer is sent).
    return _error_response(500, ErrorBody(error="internal_error",
                                          message=f"internal error ({type(exc).__name__}); see the runtime's log"))


class BodyLimit:
    """Refuse request bodies over the limit with 413 before they are read into memory.

    A trigger's body may hold one payload of `max_payload_bytes` plus its options; a batch's up to
    ten times that. Each payload is still held to the payload limit by the endpoint itself.
    """

    def __init__(self, app: ASGIApp, max_payload_bytes: int) -> None:
        self.app = app
        self.max_payload_bytes = max_payload_bytes

    def _limit(self, path: str) -> int:
        return self.max_payload_bytes * (10 if path.endswith("/batch-trigger") else 1) + 64 * 1024

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Payload limits are for triggers; a worker's reports are bounded by the outputs it carries.
        # Bundle uploads (`/deployments`) are held to their own limit by their endpoint.
        if (scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH") or "/worker/" in scope["path"]
                or scope["path"].endswith("/deployments")):
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, scope["path"], f"of {int(declared)} bytes")
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

        async def guarded_send(message: Message) -> None:
            # FastAPI turns an exception raised while it reads the body into its own 400 answer;
            # once the body is known to be too large, that answer is replaced by the 413.
            if not too_large:
                await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, counting_receive, guarded_send)
        if too_large:
            await self._refuse(send, scope["path"], f"of more than {limit} bytes")

    async def _refuse(self, send: Send, path: str, size: str) -> None:
        limit = self.max_payload_bytes
        if path.endswith("/batch-trigger"):
            message = (f"request body {size} exceeds the batch limit of {self._limit(path)} "
                       f"bytes (ten times the payload limit of {limit} bytes); split the batch")
        else:
            message = f"request body {size} exceeds the payload limit of {limit} bytes"
        body = ErrorBody(error="payload_too_large", field="payload", message=message)
        content = body.model_dump_json(exclude_none=True).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": content})


class _BodyTooLarge(Exception):
    pass


def create_app(runtime: RuntimeState) -> FastAPI:
    from .deployments_api import router as deployments_router
    from .schedules_api import router as schedules_router
    from .waitpoints_api import router as waitpoints_router
    from .worker_api import router as worker_router

    app = FastAPI(title="outlast runtime", version="1", lifespan=runtime.lifespan,
                  openapi_url=f"{API_PREFIX}/openapi.json", docs_url=f"{API_PREFIX}/docs", redoc_url=None)
    app.state.outlast = runtime
    app.state.public_tokens = PublicTokens(runtime.db)
    app.include_router(router)
    app.include_router(worker_router)
    app.include_router(schedules_router)
    app.include_router(waitpoints_router)
    app.include_router(deployments_router)
    app.add_exception_handler(EngineError, _engine_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(BodyLimit, max_payload_bytes=runtime.settings.max_payload_bytes)
    return app
