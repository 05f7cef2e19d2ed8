"""The run page's live connection: the run's changes and log lines as SSE, for the logged-in session.

The page renders the run as it is, with the cursor of its last change taken before that read; it
then subscribes from that cursor (`hx-ext="sse"`), and each `run` or `log` event makes htmx fetch
the live fragment again. An `end` event (the run is final) closes the connection.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import StreamingResponse

from ..api.realtime import LastEventId, realtime, run_follow, sse, start_cursor
from ..engine.events import Cursor
from .web import Auth, DashboardRoute

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)


async def run_cursor(request: Request, env_id: str, run_id: str) -> Cursor:
    """Where the run's changes stand now (what a page rendered after this shows already)."""
    live = await realtime(request)
    return await live.hub.read(lambda c: live.hub.feeds.run_position(c, env_id, run_id),
                               scope=live.hub.scope(env_id))


@router.get("/runs/{run_id}/subscribe")
async def run_changes(request: Request, run_id: str, session: Auth, after: str | None = None,
                      last_event_id: LastEventId = None) -> StreamingResponse:
    live = await realtime(request)
    follow = await run_follow(live, session.env_id, run_id, start_cursor(last_event_id, after), logs=True)
    return sse(follow, cross_origin=False)  # the session's cookie: this site only
