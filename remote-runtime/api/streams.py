"""Streams over HTTP: a worker writes a task's chunks, readers follow a run's named stream as SSE.

`GET /api/v1/runs/{id}/streams/{name}` sends the stream's chunks in order from the start (or after
the cursor in `Last-Event-ID` / `?after=`), live while the run executes, and ends with an `end`
event once the run is final and every chunk was sent. Same credentials as run subscriptions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from outlast.wire import API_PREFIX, STREAM_NAME_PATTERN, StreamWrite, StreamWritten

from ..engine.events import Cursor
from ..engine.feeds import Batch
from .checked_input import CheckedRoute
from .deps import Env, ReadEnv
from .hub import Subscriber
from .realtime import (
    CORS,
    SSE_RESPONSES,
    After,
    Follow,
    LastEventId,
    Token,
    check_runs,
    realtime,
    sse,
    start_cursor,
    subscriber_env,
)

router = APIRouter(prefix=API_PREFIX, route_class=CheckedRoute, tags=["realtime"])
StreamName = Annotated[str, PathParam(pattern=STREAM_NAME_PATTERN)]
BROWSER_MODULE = Path(__file__).with_name("realtime.js")


@router.get("/runs/{run_id}/streams/{name}", response_class=StreamingResponse, responses=SSE_RESPONSES)
async def read_stream(request: Request, run_id: str, name: StreamName,
                      authorization: Annotated[str | None, Header()] = None, token: Token = None,
                      after: After = None, last_event_id: LastEventId = None) -> StreamingResponse:
    env_id, expires_at = await subscriber_env(request, authorization, token, run_id=run_id)
    live = await realtime(request)
    await check_runs(live, env_id, [run_id])
    await run_in_threadpool(live.streams.sweep_if_due)
    feeds = live.hub.feeds

    async def read(after_: Cursor, until: Cursor | None) -> Batch:
        return await live.hub.read(lambda c: feeds.stream(c, after_, env_id=env_id, run_id=run_id, name=name,
                                                          until=until), scope=live.hub.scope(env_id))
    subscriber = Subscriber(env_id=env_id, run_id=run_id, stream=name)
    cursor = start_cursor(last_event_id, after) or Cursor(0, 0)
    return sse(Follow(live, subscriber, cursor, read, ends_with=[run_id], expires_at=expires_at))


@router.get("/runs/{run_id}/streams")
async def list_streams(request: Request, run_id: str, env: ReadEnv) -> list[dict[str, Any]]:
    """The run's streams: name, chunks, bytes."""
    live = await realtime(request)
    await check_runs(live, env, [run_id])
    rows = await run_in_threadpool(live.streams.names, env, run_id)
    return [{"name": r.name, "chunks": r.chunks, "bytes": r.bytes} for r in rows]


@router.post("/worker/streams", response_model=StreamWritten, tags=["worker"])
async def write_stream(request: Request, body: StreamWrite, env: Env) -> StreamWritten:
    """A remote worker stores chunks a task appended (see engine/streams.py for the limits)."""
    live = await realtime(request)
    return await run_in_threadpool(live.streams.append, body, env_ids=[env])


@router.get("/realtime.js", include_in_schema=False)
def browser_module() -> Response:
    """`subscribeToRun` and `subscribeToStream` for pages without a build step (an ES module)."""
    return Response(BROWSER_MODULE.read_bytes(), media_type="text/javascript",
                    headers={"Cache-Control": "public, max-age=300", **CORS})
