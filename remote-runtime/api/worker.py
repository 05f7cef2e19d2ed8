"""Worker API (`/api/v1/worker`): what a supervisor on another node uses instead of the engine itself.

A worker authenticates with its environment's secret key and only ever sees that environment.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from outlast.wire import (
    API_PREFIX,
    ClaimRequest,
    ClaimResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    ResumeRequest,
    SuspendRequest,
    TokenCall,
    WaitpointState,
    WaitRequest,
    WaitToken,
    WorkerRegistration,
    WorkerReport,
)

from .checked_input import CheckedRoute
from .deps import Env, State

router = APIRouter(prefix=f"{API_PREFIX}/worker", tags=["worker"], route_class=CheckedRoute)


@router.post("/register")
def register(body: WorkerRegistration, env: Env, rt: State) -> dict[str, str]:
    if body.import_error is not None:  # `outlast dev` after a broken save: remember why, register nothing
        rt.engine.registration.import_failed([env], body.node_id, body.import_error)
        return {"status": "import_failed", "env": env, "version": body.version}
    rt.engine.registration.register([env], body.version, body.tasks, node_id=body.node_id)
    return {"status": "registered", "env": env, "version": body.version}


@router.post("/claim", response_model=ClaimResponse)
async def claim(body: ClaimRequest, env: Env, rt: State) -> ClaimResponse:
    """Long-poll: answer as soon as something is claimed, or after `wait` seconds with nothing."""
    deadline = time.monotonic() + body.wait
    while True:
        assignments = await run_in_threadpool(rt.engine.claim, body.node_id, [env], body.task_ids, body.max_runs,
                                               body.versions)
        remaining = deadline - time.monotonic()
        if assignments or remaining <= 0:
            return ClaimResponse(assignments=assignments)
        await rt.wakeup.wait(min(remaining, 1.0))
        await asyncio.sleep(0)


@router.post("/heartbeat", response_model=HeartbeatResponse)
def heartbeat(body: HeartbeatRequest, env: Env, rt: State) -> HeartbeatResponse:
    response = rt.engine.heartbeat(body.node_id, body.attempts, env_ids=[env])
    if body.incarnation is not None:  # the node is known (`outlast worker drain`) and learns a drain asked of it
        response.drain = rt.engine.nodes.seen(body.node_id, body.incarnation, [env])
    return response


@router.post("/report")
def report(body: WorkerReport, env: Env, rt: State) -> dict[str, str]:
    rt.engine.report(body, env_ids=[env])
    return {"status": "ok"}


def _own_run(rt: State, env: str, run_id: str) -> None:
    rt.engine.retrieve(env, run_id)  # 404 unless the run is this environment's


@router.post("/wait", response_model=list[WaitpointState])
def wait(body: WaitRequest, env: Env, rt: State) -> list[WaitpointState]:
    _own_run(rt, env, body.run_id)
    return rt.engine.waits.wait(body)


@router.post("/suspend")
def suspend(body: SuspendRequest, env: Env, rt: State) -> dict[str, bool]:
    _own_run(rt, env, body.run_id)
    return {"requeued": rt.engine.waits.suspend(body)}


@router.post("/resume")
def resume(body: ResumeRequest, env: Env, rt: State) -> dict[str, str]:
    _own_run(rt, env, body.run_id)
    rt.engine.waits.resume_in_memory(body.node_id, body.run_id, body.attempt)
    return {"status": "ok"}


@router.post("/token", response_model=WaitToken | None)
def token(body: TokenCall, env: Env, rt: State) -> WaitToken | None:
    _own_run(rt, env, body.run_id)
    return rt.engine.waits.token_call(env, body)
