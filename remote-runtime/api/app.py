"""The runtime's FastAPI app (`/api/v1`): the routers, error handlers and body limit put together."""

from __future__ import annotations

from fastapi import FastAPI

from outlast.wire import API_PREFIX

from ..access.public_tokens import PublicTokens
from ..dashboard import mount_dashboard
from ..state import RuntimeState
from . import bulk_actions, deployments, keys, nodes, queues, realtime, runs, schedules, streams, waitpoints, worker
from .body_limit import BodyLimit
from .errors import add_error_handlers


def create_app(runtime: RuntimeState) -> FastAPI:
    app = FastAPI(title="outlast runtime", version="1", lifespan=runtime.lifespan,
                  openapi_url=f"{API_PREFIX}/openapi.json", docs_url=f"{API_PREFIX}/docs", redoc_url=None)
    app.state.outlast = runtime
    app.state.public_tokens = PublicTokens(runtime.db)
    # realtime first: its /runs/subscribe must not be taken for a run id by runs' /runs/{run_id}
    for module in (realtime, streams, runs, worker, schedules, waitpoints, deployments, keys, bulk_actions, queues,
                   nodes):
        app.include_router(module.router)
    mount_dashboard(app, runtime)
    add_error_handlers(app)
    app.add_middleware(BodyLimit, max_payload_bytes=runtime.settings.max_payload_bytes)
    return app
