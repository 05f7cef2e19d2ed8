"""The dashboard at `/`: server-rendered pages (Jinja2, vendored htmx) on the engine's reads, for one
environment per login session."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from ..state import RuntimeState
from . import actions, live, pages
from .session import Sessions, load_secret


def mount_dashboard(app: FastAPI, runtime: RuntimeState) -> None:
    app.state.dashboard_sessions = Sessions(load_secret(runtime.settings.data_dir))
    app.mount("/dashboard/static", StaticFiles(directory=Path(__file__).parent / "static"), name="dashboard-static")
    app.include_router(actions.router)
    app.include_router(live.router)
    app.include_router(pages.router)
