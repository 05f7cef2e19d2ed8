"""The webhook on its own: an ASGI app (Starlette) serving the adapter endpoints with it mounted.

    uvicorn hooks:app      # app = outlast.adapters.vercel.asgi_app()

Paths are the endpoint table's, unprefixed: `POST /vercel`, `GET /health`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from outlast._adapter import AdapterEndpoints, AdapterSettings, standalone_app

from ._webhook import DEFAULT_PATH, SECRET_ENV, mount

__all__ = ["asgi_app"]


def asgi_app(*, secret: str | None = None, secret_env: str = SECRET_ENV, keys: Mapping[str, str] | None = None,
             path: str = DEFAULT_PATH, settings: AdapterSettings | None = None,
             project_id: str | Iterable[str] | None = None):
    """A Starlette app with the Vercel webhook at `path`; settings default to the OUTLAST_* variables."""
    endpoints = AdapterEndpoints(settings or AdapterSettings.from_mapping({}, prefix="/"))
    mount(endpoints, path=path, secret=secret, secret_env=secret_env, keys=keys, project_id=project_id)
    return standalone_app(endpoints)
