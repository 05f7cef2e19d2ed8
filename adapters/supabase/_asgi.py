"""The receiver on its own: an ASGI app (Starlette) serving the adapter endpoints with it mounted.

    uvicorn myapp.receiver:app      # app = outlast.adapters.supabase.asgi_app()

Paths are the endpoint table's, unprefixed: `POST /supabase`, `GET /health`, `GET /runs/{id}`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from outlast._adapter import AdapterEndpoints, AdapterRequest, AdapterResponse, AdapterSettings, headers_of

from ._receiver import DEFAULT_PATH, SECRET_ENV, SECRET_HEADER, mount
from ._routes import Router

__all__ = ["asgi_app"]


def asgi_app(router: Router | None = None, *, secret: str | None = None, secret_env: str = SECRET_ENV,
             header: str = SECRET_HEADER, path: str = DEFAULT_PATH, settings: AdapterSettings | None = None):
    """A Starlette app with the Supabase receiver at `path`; settings default to the OUTLAST_* variables."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    endpoints = AdapterEndpoints(settings or AdapterSettings.from_mapping({}, prefix="/"))
    mount(endpoints, router, path=path, secret=secret, secret_env=secret_env, header=header)

    async def dispatch(request: Request) -> Response:
        answer: AdapterResponse = await endpoints.handle(AdapterRequest(
            method=request.method, path="/" + request.path_params["path"], headers=headers_of(request.headers.items()),
            body=await request.body(), query=dict(request.query_params)))
        if answer.stream is not None:
            return StreamingResponse(answer.stream, status_code=answer.status, headers=answer.headers)
        return Response(answer.body, status_code=answer.status, headers=answer.headers)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await endpoints.aclose()

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    app = Starlette(routes=[Route("/{path:path}", dispatch, methods=methods)], lifespan=lifespan)
    app.state.outlast = endpoints
    return app
