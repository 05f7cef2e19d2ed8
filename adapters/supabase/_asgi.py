"""The receiver on its own: an ASGI app (Starlette) serving the adapter endpoints with it mounted.

    uvicorn myapp.receiver:app      # app = outlast.adapters.supabase.asgi_app()

Paths are the endpoint table's, unprefixed: `POST /supabase`, `GET /health`, `GET /runs/{id}`.
"""

from __future__ import annotations

from outlast._adapter import AdapterEndpoints, AdapterSettings, standalone_app

from ._events import REPEAT_WINDOW
from ._receiver import DEFAULT_PATH, SECRET_ENV, SECRET_HEADER, mount
from ._routes import Router

__all__ = ["asgi_app"]


def asgi_app(router: Router | None = None, *, secret: str | None = None, secret_env: str = SECRET_ENV,
             header: str = SECRET_HEADER, path: str = DEFAULT_PATH, settings: AdapterSettings | None = None,
             repeat_window: float = REPEAT_WINDOW):
    """A Starlette app with the Supabase receiver at `path`; settings default to the OUTLAST_* variables."""
    endpoints = AdapterEndpoints(settings or AdapterSettings.from_mapping({}, prefix="/"))
    mount(endpoints, router, path=path, secret=secret, secret_env=secret_env, header=header,
          repeat_window=repeat_window)
    return standalone_app(endpoints, ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"))
