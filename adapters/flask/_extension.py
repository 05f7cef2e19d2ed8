"""The Flask extension: `Outlast(app)` or `outlast.init_app(app)`, configured by `OUTLAST_*` config keys."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request

from outlast._adapter import (
    AdapterEndpoints,
    AdapterRequest,
    AdapterResponse,
    AdapterSettings,
    AppClient,
    Handler,
    SyncBridge,
    error_response,
)
from outlast._errors import RuntimeUnavailableError
from outlast._tasks import Task
from outlast._trace import reset_trace, set_trace, trace_from_headers

__all__ = ["Outlast", "OutlastState"]

_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class OutlastState:
    """`current_app.extensions["outlast"]`: the app's client and endpoints."""

    def __init__(self, endpoints: AdapterEndpoints) -> None:
        self.endpoints = endpoints
        self.bridge = SyncBridge()

    @property
    def client(self) -> AppClient:
        """The app's client (thread-safe): `client.trigger(task_or_id, payload, **options)`."""
        return self.endpoints.app_client()

    def handle(self, adapter_request: AdapterRequest) -> AdapterResponse:
        return self.bridge.call(self.endpoints.handle(adapter_request))

    def close(self) -> None:
        self.bridge.call(self.endpoints.aclose())
        self.bridge.close()
        self.endpoints.close()


class Outlast:
    """Outlast for Flask::

        outlast = Outlast()
        outlast.init_app(app)          # reads OUTLAST_API_URL, OUTLAST_SECRET_KEY, ... from app.config

        @app.post("/orders")
        def create():
            handle = outlast.client.trigger(process_order, request.get_json())

    Mounts the endpoints blueprint under `OUTLAST_PREFIX` (`/outlast`), copies each request's
    trace id into the runs it triggers, and answers `RuntimeUnavailableError` with a 503.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        tasks: Iterable[Task[Any] | str] | None = None,
        webhooks: Mapping[str, Task[Any] | str] | None = None,
        trace: bool = True,
        **settings: Any,
    ) -> None:
        self._tasks = None if tasks is None else list(tasks)
        self._webhooks = dict(webhooks or {})
        self._routes: list[tuple[str, str, Handler]] = []
        self._trace = trace
        self._settings = settings
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        settings = AdapterSettings.from_mapping(app.config, **self._settings)
        endpoints = AdapterEndpoints(settings, tasks=self._tasks)
        for name, task in self._webhooks.items():
            endpoints.webhook(name, task)
        for method, path, handler in self._routes:
            endpoints.add_route(method, path, handler)
        app.extensions["outlast"] = OutlastState(endpoints)
        app.register_blueprint(blueprint, url_prefix=settings.prefix or None)
        if self._trace:
            app.before_request(_start_trace)
            app.teardown_request(_end_trace)
        app.register_error_handler(RuntimeUnavailableError, _unavailable)

    @property
    def state(self) -> OutlastState:
        return current_app.extensions["outlast"]

    @property
    def client(self) -> AppClient:
        """The current app's client; use inside a request or app context."""
        return self.state.client

    def webhook(self, name: str, task: Task[Any] | str) -> None:
        """Accept signed deliveries at `POST {prefix}/webhooks/{name}` (call before `init_app`)."""
        self._webhooks[name] = task

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve a framework-neutral handler under the prefix (call before `init_app`)."""
        self._routes.append((method, path, handler))


def _to_response(answer: AdapterResponse, state: OutlastState) -> Response:
    if answer.stream is not None:
        return Response(state.bridge.iterate(answer.stream), status=answer.status, headers=answer.headers,
                        direct_passthrough=True)
    return Response(answer.body, status=answer.status, headers=answer.headers)


blueprint = Blueprint("outlast", __name__)


@blueprint.route("/<path:path>", methods=_METHODS)
def _serve(path: str) -> Response:
    state: OutlastState = current_app.extensions["outlast"]
    adapter_request = AdapterRequest(request.method, "/" + path, headers=dict(request.headers),
                                     body=request.get_data(cache=False), query=request.args.to_dict())
    return _to_response(state.handle(adapter_request), state)


def _start_trace() -> None:
    trace = trace_from_headers({name.lower(): value for name, value in request.headers.items()})
    if trace:
        g.outlast_trace = set_trace(trace)


def _end_trace(_exc: BaseException | None) -> None:
    token = g.pop("outlast_trace", None)
    if token is not None:
        reset_trace(token)


def _unavailable(exc: RuntimeUnavailableError) -> Response:
    answer = error_response(503, "runtime_unavailable", str(exc))
    return Response(answer.body, status=503, headers=answer.headers)
