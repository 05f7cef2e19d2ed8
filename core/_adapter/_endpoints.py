"""The endpoint table every framework adapter mounts under its prefix (default `/outlast`).

Built-in routes (paths relative to the prefix):

    GET  /runs/{run_id}          the run, for browsers holding a public access token
    GET  /runs/{run_id}/stream   Server-Sent Events of the run (as JSON) at each change, until it ends
    GET  /runs/{run_id}/subscribe, /runs/{run_id}/streams/{name}, /realtime.js
                                 the runtime's run changes, streams and browser module, proxied
    POST /webhooks/{name}        a signed inbound webhook that triggers the task registered for `name`
    GET  /health                 runtime reachable, key valid, this app's tasks deployed

Other receivers add their own routes with `AdapterEndpoints.add_route`; every framework adapter
serves them through the same catch-all mount, so a receiver written once works in all of them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from outlast._client import AsyncClient, Client
from outlast._errors import APIError, ConfigurationError, OutlastError, RuntimeUnavailableError
from outlast._offload import Offloader
from outlast._tasks import Task, registered_tasks, task_id_of

from ._facade import AppClient, AsyncAppClient
from ._health import health
from ._http import AdapterRequest, AdapterResponse, error_response
from ._realtime_proxy import browser_module, proxy_run_changes, proxy_stream, stream_run
from ._run_view import retrieve_run
from ._settings import AdapterSettings, WebhookRoute
from ._webhooks import receive_webhook

__all__ = ["AdapterEndpoints", "Handler"]

log = logging.getLogger("outlast.adapters")

Handler = Callable[[AdapterRequest], Awaitable[AdapterResponse]]
"""An endpoint: `async def handler(request: AdapterRequest) -> AdapterResponse`."""

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")


@dataclass(frozen=True)
class _Route:
    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Handler


def _compile(template: str) -> re.Pattern[str]:
    if not template.startswith("/"):
        raise ValueError(f"route path must start with '/', got {template!r}")
    regex, last = "", 0
    for match in _PARAM.finditer(template):
        regex += re.escape(template[last:match.start()])
        regex += f"(?P<{match.group(1)}>.+)" if match.group(2) else f"(?P<{match.group(1)}>[^/]+)"
        last = match.end()
    return re.compile(regex + re.escape(template[last:]) + "/?")


class AdapterEndpoints:
    """The routes an app mounts, the clients they use, and the webhooks they accept.

    Framework adapters build one per app, mount `settings.prefix` with a catch-all route, turn each
    request into an `AdapterRequest` whose `path` is relative to the prefix, and send back the
    `AdapterResponse` of `await endpoints.handle(request)`.

    Extension point for other receivers (Supabase, Vercel, ...)::

        async def receive(request: AdapterRequest) -> AdapterResponse:
            client = request.endpoints.async_client()
            handle = await client.trigger("sync-row", request.json())
            return json_response({"run_id": handle.id}, status=202)

        endpoints.add_route("POST", "/supabase/{table}", receive)   # -> POST /outlast/supabase/orders

    `{name}` matches one path segment and `{name:path}` the rest of the path; both land in
    `request.path_params`. Outlast errors a handler raises become JSON error answers (a runtime
    that is down: 503; an API error: its own status and `field`), so handlers need not catch them.
    For signed deliveries use `outlast._adapter.verify_signature(request, secrets)`, the same HMAC
    check (freshness window, key rotation, constant-time compare) the built-in webhooks use.
    """

    def __init__(
        self,
        settings: AdapterSettings | None = None,
        *,
        tasks: Iterable[Task[Any] | str] | None = None,
    ) -> None:
        self.settings = settings or AdapterSettings.from_mapping({})
        self._routes: list[_Route] = []
        self._declared: list[str] | None = None if tasks is None else [task_id_of(t) for t in tasks]
        self.webhooks: dict[str, WebhookRoute] = {}
        self._client: Client | None = None
        self._client_lock = threading.Lock()
        self._offloader: Offloader | None = None
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        _builtin_routes(self)

    # --- routes ------------------------------------------------------------------------------

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve `handler` for `method path` (relative to the prefix) through every framework adapter.

        Routes are matched in the order they were added; the built-in ones come first, so a
        receiver cannot shadow them by accident.
        """
        if not callable(handler):
            raise TypeError(f"handler must be an async function, got {handler!r}")
        self._routes.append(_Route(method.upper(), path, _compile(path), handler))

    @property
    def routes(self) -> list[tuple[str, str]]:
        """(method, path) of every route, for adapters that register routes one by one."""
        return [(route.method, route.template) for route in self._routes]

    async def handle(self, request: AdapterRequest) -> AdapterResponse:
        """Dispatch `request` to its route; 404/405 when none matches."""
        request.endpoints = self
        allowed = []
        for route in self._routes:
            match = route.pattern.fullmatch(request.path)
            if match is None:
                continue
            if route.method != request.method and not (route.method == "GET" and request.method == "HEAD"):
                allowed.append(route.method)
                continue
            request.path_params = match.groupdict()
            return await self._call(route, request)
        if allowed:
            response = error_response(405, "method_not_allowed", f"{request.method} is not allowed here")
            response.headers["allow"] = ", ".join(sorted(set(allowed)))
            return response
        return error_response(404, "not_found", f"no outlast endpoint at {self.settings.prefix}{request.path}")

    async def _call(self, route: _Route, request: AdapterRequest) -> AdapterResponse:
        try:
            return await route.handler(request)
        except RuntimeUnavailableError as exc:
            return error_response(503, "runtime_unavailable", str(exc))
        except APIError as exc:
            status = exc.status_code if 400 <= exc.status_code < 600 else 502
            error = str(exc.body.get("error") or "runtime_error")
            return error_response(status, error, str(exc), exc.field)
        except ConfigurationError as exc:
            log.error("outlast adapter is misconfigured: %s", exc)
            return error_response(500, "configuration_error", str(exc))
        except OutlastError as exc:
            return error_response(400, "bad_request", str(exc))

    # --- clients -----------------------------------------------------------------------------

    def client(self) -> Client:
        """The app's `Client`, built from the settings on first use; thread-safe."""
        with self._client_lock:
            if self._client is None:
                self._client = self.settings.make_client()
            return self._client

    def async_client(self) -> AsyncClient:
        """The app's `AsyncClient` for the running event loop (connections belong to one loop)."""
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = self.settings.make_async_client()
            self._async_clients[loop] = client
        return client

    def bind_async_client(self, client: AsyncClient) -> None:
        """Use `client` for the running loop (an app's lifespan-managed client)."""
        self._async_clients[asyncio.get_running_loop()] = client

    async def aclose(self) -> None:
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    @property
    def offloader(self) -> Offloader | None:
        """Stores large trigger payloads in S3 when `offload_bucket` is set (see outlast._offload)."""
        if self.settings.offload_bucket is None:
            return None
        if self._offloader is None:
            self._offloader = Offloader(self.settings.offload_bucket, threshold=self.settings.offload_threshold)
        return self._offloader

    def app_client(self) -> AppClient:
        """The sync client routes use: takes task objects or ids, offloads large payloads."""
        return AppClient(self.client(), self.offloader)

    def async_app_client(self) -> AsyncAppClient:
        return AsyncAppClient(self.async_client(), self.offloader)

    # --- webhooks ----------------------------------------------------------------------------

    def webhook(
        self,
        name: str,
        task: Task[Any] | str,
        *,
        secret: str | None = None,
        previous_secret: str | None = None,
    ) -> None:
        """Accept signed deliveries at `POST {prefix}/webhooks/{name}`, each triggering `task`.

        Secrets default to the settings' `webhook_secret` / `webhook_previous_secret`.
        """
        secrets = [s for s in (secret or self.settings.webhook_secret,
                               previous_secret or self.settings.webhook_previous_secret) if s]
        if not secrets:
            raise ConfigurationError(
                f"webhook {name!r} has no secret: pass secret= or set OUTLAST_WEBHOOK_SECRET"
            )
        self.webhooks[name] = WebhookRoute(name, task_id_of(task), tuple(secrets))

    # --- health ------------------------------------------------------------------------------

    def declared_tasks(self) -> list[str]:
        """Task ids this app relies on: those given to the constructor, else every declared task."""
        ids = list(self._declared) if self._declared is not None else sorted(registered_tasks())
        ids += [hook.task for hook in self.webhooks.values() if hook.task not in ids]
        return ids



def _builtin_routes(endpoints: AdapterEndpoints) -> None:
    endpoints.add_route("GET", "/runs/{run_id}", retrieve_run)
    endpoints.add_route("GET", "/runs/{run_id}/stream", stream_run)
    endpoints.add_route("GET", "/runs/{run_id}/subscribe", proxy_run_changes)
    endpoints.add_route("GET", "/runs/{run_id}/streams/{name}", proxy_stream)
    endpoints.add_route("GET", "/realtime.js", browser_module)
    endpoints.add_route("POST", "/webhooks/{name}", receive_webhook)
    endpoints.add_route("GET", "/health", health)


def headers_of(pairs: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
    """Lower-cased header dict from a mapping or (name, value) pairs; the first value wins."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    out: dict[str, str] = {}
    for name, value in items:
        out.setdefault(name.lower(), value)
    return out
