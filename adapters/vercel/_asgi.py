"""The webhook on its own: an ASGI app (Starlette) serving the adapter endpoints with it mounted.

    uvicorn hooks:app      # app = outlast.adapters.vercel.asgi_app()

Paths are the endpoint table's, unprefixed: `POST /vercel`, `GET /health`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from outlast._adapter import AdapterEndpoints, AdapterRequest, AdapterSettings, headers_of

from ._webhook import DEFAULT_PATH, SECRET_ENV, mount

__all__ = ["asgi_app"]


def asgi_app(*, secret: str | None = None, secret_env: str = SECRET_ENV, keys: Mapping[str, str] | None = None,
             path: str = DEFAULT_PATH, settings: AdapterSettings | None = None):
    """A Starlette app with the Vercel webhook at `path`; settings default to the OUTLAST_* variables."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    endpoints = AdapterEndpoints(settings or AdapterSettings.from_mapping({}, prefix="/"))
    mount(endpoints, path=path, secret=secret, secret_env=secret_env, keys=keys)

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

    app = Starlette(routes=[Route("/{path:path}", dispatch, methods=["GET", "HEAD", "POST"])], lifespan=lifespan)
    app.state.outlast = endpoints
    return app
