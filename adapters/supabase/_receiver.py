"""The webhook receiver: checks the shared secret, routes the event, triggers its tasks once.

It is an adapter-core handler, so it mounts under the outlast prefix of FastAPI, Flask and Django
apps (`mount(endpoints)`), and `asgi_app()` serves it on its own.
"""

from __future__ import annotations

import hmac
import logging
import os
from typing import Any, Protocol

from outlast._adapter import AdapterRequest, AdapterResponse, Handler, error_response, json_response
from outlast._errors import ConfigurationError

from ._events import REPEAT_WINDOW, EventShapeError, parse_event
from ._routes import Router, default_router

__all__ = ["DEFAULT_PATH", "SECRET_ENV", "SECRET_HEADER", "Mountable", "SupabaseReceiver", "mount"]

log = logging.getLogger("outlast.adapters.supabase")

SECRET_ENV = "OUTLAST_SUPABASE_SECRET"
SECRET_HEADER = "x-outlast-secret"
DEFAULT_PATH = "/supabase"


class SupabaseReceiver:
    """`async (AdapterRequest) -> AdapterResponse` for database webhook deliveries.

    401 when the secret header is missing or wrong; 422 (with `field`) when the body is not an
    event; 200 and a log line for tables and events no route asks for, so a sender never retries
    them; 202 with the started runs, or 200 with the same runs when a delivery is repeated.

    `repeat_window`: seconds in which an identical delivery from a dashboard-made webhook (no
    commit timestamp) returns the first one's runs; later, the same content starts new runs.
    """

    def __init__(self, router: Router | None = None, *, secret: str | None = None, secret_env: str = SECRET_ENV,
                 header: str = SECRET_HEADER, repeat_window: float = REPEAT_WINDOW) -> None:
        if not repeat_window > 0:
            raise ConfigurationError(f"repeat_window must be a positive number of seconds, got {repeat_window!r}")
        self.router = default_router if router is None else router
        self.repeat_window = repeat_window
        self.header = header.lower()
        secret = secret or os.environ.get(secret_env)
        if not secret:
            raise ConfigurationError(f"the Supabase receiver has no secret: set {secret_env} (the value "
                                     "`outlast supabase setup --secret-env` put in the trigger) or pass secret=")
        self._secret = secret.encode()

    def authentic(self, request: AdapterRequest) -> bool:
        offered = (request.header(self.header) or "").encode()
        return hmac.compare_digest(offered, self._secret)

    async def __call__(self, request: AdapterRequest) -> AdapterResponse:
        if not self.authentic(request):
            return error_response(401, "unauthorized", f"missing or wrong {self.header} header", self.header)
        try:
            event = parse_event(request.json())
        except ValueError as exc:
            return error_response(422, "invalid_request", f"the body is not JSON: {exc}", "body")
        except EventShapeError as exc:
            return error_response(422, "invalid_event", str(exc), exc.field)
        routes = self.router.routes_for(event)
        if not routes:
            reason = (f"no route for {event.type} on {event.qualified_table}" if event.qualified_table
                      in self.router.tables() else f"no route for table {event.qualified_table}")
            log.warning("supabase webhook ignored: %s", reason)
            return json_response({"ignored": True, "reason": reason, "runs": []})
        try:
            items = self.router.plan(event, repeat_window=self.repeat_window)
        except EventShapeError as exc:
            return error_response(422, "invalid_event", str(exc), exc.field)
        if not items:
            return json_response({"ignored": True, "reason": "no route's when() matched this row", "runs": []})
        assert request.endpoints is not None
        batch = await request.endpoints.async_client().batch_trigger(items)
        runs: list[dict[str, Any]] = [{"id": h.id, "task": h.task, "duplicate": h.is_cached} for h in batch.runs]
        fresh = any(not h.is_cached for h in batch.runs)
        return json_response({"ignored": False, "runs": runs}, status=202 if fresh else 200)


class Mountable(Protocol):
    """Anything with the adapter core's extension point: `AdapterEndpoints`, and the FastAPI and Flask
    `Outlast` extensions (Flask: before `init_app`)."""

    def add_route(self, method: str, path: str, handler: Handler) -> None: ...


def mount(target: Mountable, router: Router | None = None, *, path: str = DEFAULT_PATH, secret: str | None = None,
          secret_env: str = SECRET_ENV, header: str = SECRET_HEADER,
          repeat_window: float = REPEAT_WINDOW) -> SupabaseReceiver:
    """Serve the receiver at `POST {prefix}{path}` (default `/outlast/supabase`) of an app's outlast endpoints."""
    receiver = SupabaseReceiver(router, secret=secret, secret_env=secret_env, header=header,
                                repeat_window=repeat_window)
    target.add_route("POST", path, receiver)
    return receiver
