"""`Outlast(app)`: a FastAPI app's lifespan-managed client, its dependency, its endpoints and trace middleware."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from outlast._adapter import (
    AdapterEndpoints,
    AdapterRequest,
    AdapterResponse,
    AdapterSettings,
    AppClient,
    AsyncAppClient,
    Handler,
    error_response,
)
from outlast._errors import RuntimeUnavailableError
from outlast._tasks import Task
from outlast._trace import trace_from_headers, tracing

__all__ = ["Outlast", "OutlastClient", "SyncOutlastClient", "TraceMiddleware", "install"]

OutlastClient = AsyncAppClient
SyncOutlastClient = AppClient
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class TraceMiddleware:
    """Runs triggered while serving a request carry its trace id (`traceparent` or `x-request-id`) in metadata."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        with tracing(trace_from_headers(headers)):
            await self.app(scope, receive, send)


def to_adapter_request(request: Request, path: str, body: bytes) -> AdapterRequest:
    return AdapterRequest(request.method, "/" + path.lstrip("/"), headers=dict(request.headers), body=body,
                          query=dict(request.query_params))


def to_response(answer: AdapterResponse) -> Response:
    if answer.stream is not None:
        return StreamingResponse(answer.stream, status_code=answer.status, headers=answer.headers)
    return Response(answer.body, status_code=answer.status, headers=answer.headers)


class Outlast:
    """Outlast for a FastAPI app::

        outlast = Outlast(app, webhooks={"orders": process_order})

        @app.post("/orders")
        async def create(order: Order, client: Annotated[OutlastClient, Depends(outlast.client)]):
            handle = await client.trigger(process_order, order)      # or client.trigger("process-order", ...)

    Settings come from the keyword arguments, then `OUTLAST_*` environment variables (see
    `AdapterSettings.from_mapping`). The endpoints are mounted under `prefix` (`/outlast`).
    """

    def __init__(
        self,
        app: FastAPI | None = None,
        *,
        tasks: Iterable[Task[Any] | str] | None = None,
        webhooks: Mapping[str, Task[Any] | str] | None = None,
        trace: bool = True,
        **settings: Any,
    ) -> None:
        self.settings = AdapterSettings.from_mapping({}, **settings)
        self.endpoints = AdapterEndpoints(self.settings, tasks=tasks)
        for name, task in (webhooks or {}).items():
            self.endpoints.webhook(name, task)
        self.trace = trace
        self.router = APIRouter(prefix=self.settings.prefix, tags=["outlast"])
        self.router.add_api_route("/{path:path}", self._serve, methods=_METHODS, include_in_schema=False)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: FastAPI) -> None:
        app.state.outlast = self
        app.include_router(self.router)
        if self.trace:
            app.add_middleware(TraceMiddleware)
        app.add_exception_handler(RuntimeUnavailableError, _unavailable)
        app.router.lifespan_context = self._lifespan(app.router.lifespan_context)

    def _lifespan(self, inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
        @contextlib.asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[Any]:
            # One pooled client for the app's loop, opened with the app and closed with it.
            client = self.settings.make_async_client()
            self.endpoints.bind_async_client(client)
            try:
                async with inner(app) as state:
                    yield state
            finally:
                await self.endpoints.aclose()
                self.endpoints.close()

        return lifespan

    async def _serve(self, request: Request, path: str) -> Response:
        answer = await self.endpoints.handle(to_adapter_request(request, path, await request.body()))
        return to_response(answer)

    # --- dependencies ----------------------------------------------------------------------

    async def client(self) -> AsyncAppClient:
        """Dependency for `async def` routes: `client: Annotated[OutlastClient, Depends(outlast.client)]`."""
        return self.endpoints.async_app_client()

    def sync_client(self) -> AppClient:
        """Dependency for `def` routes: `client: Annotated[SyncOutlastClient, Depends(outlast.sync_client)]`."""
        return self.endpoints.app_client()

    # --- more endpoints --------------------------------------------------------------------

    def webhook(self, name: str, task: Task[Any] | str, *, secret: str | None = None,
                previous_secret: str | None = None) -> None:
        """Accept signed deliveries at `POST {prefix}/webhooks/{name}`, each triggering `task`."""
        self.endpoints.webhook(name, task, secret=secret, previous_secret=previous_secret)

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve a framework-neutral handler under the prefix (see `AdapterEndpoints.add_route`)."""
        self.endpoints.add_route(method, path, handler)


async def _unavailable(_request: Request, exc: Exception) -> Response:
    # A route that triggers while the runtime is down answers 503 (retry later), not a bare 500.
    return to_response(error_response(503, "runtime_unavailable", str(exc)))


def install(app: FastAPI, **options: Any) -> Outlast:
    """`Outlast(app, **options)`."""
    return Outlast(app, **options)
