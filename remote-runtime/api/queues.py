"""Queues API (`/api/v1/queues`): each queue's concurrency and rate limits and what it holds now."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from outlast.wire import API_PREFIX, Queue

from ..errors import EngineError
from ..state import RuntimeState
from ..store.queue import queue_states
from .checked_input import CheckedRoute
from .deps import Env, State

router = APIRouter(prefix=f"{API_PREFIX}/queues", tags=["queues"], route_class=CheckedRoute)


class QueueNotFound(EngineError):
    status_code = 404
    code = "queue_not_found"


def _states(rt: RuntimeState, env: str, name: str | None) -> list[Queue]:
    with rt.engine.context.scope(env).connect() as c:
        return [Queue.model_validate(state) for state in queue_states(c, env, name, now=rt.engine.clock())]


@router.get("", response_model=list[Queue])
async def list_queues(env: Env, rt: State) -> list[Queue]:
    return await run_in_threadpool(_states, rt, env, None)


@router.get("/{name:path}", response_model=Queue)
async def retrieve_queue(name: str, env: Env, rt: State) -> Queue:
    """One queue by name (task queues are named `task/<task id>`, hence the path parameter)."""
    found = await run_in_threadpool(_states, rt, env, name)
    if not found:
        raise QueueNotFound(f"queue {name!r} does not exist in environment {env!r}", field="name")
    return found[0]
