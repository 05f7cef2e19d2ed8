"""Triggering, tasks and runs (`/api/v1/tasks`, `/api/v1/runs`), public tokens and health."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from pydantic import TypeAdapter

from outlast.wire import (
    API_PREFIX,
    COMMIT_HEADER,
    BatchHandle,
    BatchItem,
    BatchTriggerRequest,
    Moment,
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

from ..errors import EngineError
from ..worker.isolation import mode_from as isolation_mode
from .checked_input import CheckedRoute
from .deps import Env, PayloadTooLarge, ReadEnv, State

_json = TypeAdapter(Any)
router = APIRouter(prefix=API_PREFIX, route_class=CheckedRoute)
MAX_EVENT_ID = 2**63 - 1  # event ids are BIGINT


def _check_payload_sizes(limit: int, items: list[BatchItem]) -> None:
    for index, item in enumerate(items):
        size = len(_json.dump_json(item.payload))
        if size > limit:
            field = f"items.{index}.payload" if len(items) > 1 else "payload"
            raise PayloadTooLarge(f"{field} is {size} bytes; the limit is {limit} bytes", field=field)


TaskId = Annotated[str, Path(min_length=1, max_length=128)]  # as BatchItem.task
# The git commit of the triggering code (the SDK sends it on Vercel): runs use the version built from it.
Commit = Annotated[str | None, Header(alias=COMMIT_HEADER, max_length=64)]


@router.post("/tasks/{task_id:path}/trigger", response_model=RunHandle, tags=["tasks"])
def trigger(task_id: TaskId, body: TriggerRequest, env: Env, rt: State, commit: Commit = None) -> RunHandle:
    item = BatchItem(task=task_id, payload=body.payload, options=body.options)
    _check_payload_sizes(rt.settings.max_payload_bytes, [item])
    rt.check_runnable(env, [task_id])
    with rt.refusing_unimportable(env, [task_id]):
        return rt.engine.trigger(env, rt.deployments.pin(env, [item], commit))[0]


@router.post("/tasks/batch-trigger", response_model=BatchHandle, tags=["tasks"])
def batch_trigger(body: BatchTriggerRequest, env: Env, rt: State, commit: Commit = None) -> BatchHandle:
    _check_payload_sizes(rt.settings.max_payload_bytes, body.items)
    task_ids = [item.task for item in body.items]
    rt.check_runnable(env, task_ids)
    with rt.refusing_unimportable(env, task_ids):
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
    created_after: Annotated[Moment | None, Query()] = None,
    created_before: Annotated[Moment | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> RunList:
    return rt.engine.list_runs(env, status=[s.value for s in status], task=task, tag=tag,
                               created_after=created_after, created_before=created_before,
                               limit=limit, cursor=cursor)


@router.get("/runs/{run_id}", response_model=Run, tags=["runs"])
def retrieve_run(run_id: str, env: ReadEnv, rt: State) -> Run:
    return rt.engine.retrieve(env, run_id)


@router.get("/runs/{run_id}/events", response_model=list[RunEvent], tags=["runs"])
def run_events(run_id: str, env: ReadEnv, rt: State,
               after: Annotated[int, Query(ge=0, le=MAX_EVENT_ID)] = 0) -> list[RunEvent]:
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
    body = {"status": "ok", "database": "sqlite" if rt.db.is_sqlite else "postgresql", "node": rt.settings.node_id,
            "isolation": isolation_mode(rt.settings.isolation)}  # what task processes of this node may see
    if (problem := rt.import_problem) is not None:  # a dev loop whose tasks do not import: say why
        body["status"] = "degraded"
        body["tasks"] = {"imported": False, "error": problem}
    supervisor = rt.supervisor or rt.deployed_supervisor
    if supervisor is not None:  # how this node's waiting runs are held
        problem = supervisor.checkpoint_problem
        body["checkpoints"] = {"enabled": not problem, **({"reason": problem} if problem else {})}
    return body

