"""An adapter endpoint table served on its own, as an ASGI app (Starlette), for receivers that run
without a web framework around them (`uvicorn module:app`). Paths are the table's, unprefixed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from ._endpoints import AdapterEndpoints, headers_of
from ._http import AdapterRequest


def standalone_app(endpoints: AdapterEndpoints, methods: Sequence[str] = ("GET", "HEAD", "POST")) -> Any:
    """A Starlette app that hands every request to `endpoints` and closes its client on shutdown."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    async def dispatch(request: Request) -> Response:
        answer = await endpoints.handle(AdapterRequest(
            method=request.method, path="/" + request.path_params["path"], headers=headers_of(request.headers.items()),
            body=await request.body(), query=dict(request.query_params)))
        if answer.stream is not None:
            return StreamingResponse(answer.stream, status_code=answer.status, headers=answer.headers)
        return Response(answer.body, status_code=answer.status, headers=answer.headers)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await endpoints.aclose()

    app = Starlette(routes=[Route("/{path:path}", dispatch, methods=list(methods))], lifespan=lifespan)
    app.state.outlast = endpoints
    return app
