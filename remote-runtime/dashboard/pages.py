"""The dashboard's pages (GET): runs, a run and its live fragment, tokens, schedules, deployments, queues,
environment variables, nodes. Each reads through the engine's public methods, for the session's environment."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from outlast._schedules import schedule_tag
from outlast.wire import RunStatus

from ..engine.overview import Overview
from ..engine.reads import RunFilter
from ..engine.streams import Streams
from .live import run_cursor
from .timeline import timeline
from .web import Auth, BadInput, DashboardRoute, Rt, page

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)
Many = Annotated[list[str], Query()]


def _time(value: str | None, field: str) -> datetime | None:
    """A datetime-local field (no zone: UTC) or ISO 8601 text."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadInput(f"{field}: not a date and time ({value!r}); use YYYY-MM-DDTHH:MM", field=field) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def overview(rt: Rt) -> Overview:
    return Overview(rt.db)


@router.get("/")
def runs_page(request: Request, session: Auth, rt: Rt, status: Many = [],  # noqa: B006 - FastAPI copies defaults
              task: str = "", tag: str = "", version: str = "", schedule: str = "",
              created_after: str = "", created_before: str = "", cursor: str | None = None,
              limit: Annotated[int, Query(ge=1, le=200)] = 50) -> Response:
    known = {s.value for s in RunStatus}
    bad = [s for s in status if s not in known]
    if bad:
        raise BadInput(f"status: unknown status {bad[0]!r}", field="status")
    tags = [t for t in (tag.strip(), schedule_tag(schedule.strip()) if schedule.strip() else "") if t]
    where = RunFilter(status=status, task=[task.strip()] if task.strip() else [], tag=tags,
                      version=version.strip() or None, created_after=_time(created_after, "created_after"),
                      created_before=_time(created_before, "created_before"), every_tag=True)
    runs = rt.engine.reads.search(session.env_id, where, limit=limit, cursor=cursor)
    tasks = [t.id for t in rt.engine.list_tasks(session.env_id)]
    query = request.url.include_query_params(cursor=runs.next_cursor) if runs.next_cursor else None
    filters = {"status": status, "task": task, "tag": tag, "version": version, "schedule": schedule,
               "created_after": created_after, "created_before": created_before}
    return page(request, "runs.html", {"runs": runs.data, "next_page": str(query) if query else None,
                                       "statuses": sorted(known), "tasks": tasks, "filters": filters})


def _run_context(session: Auth, rt: Rt, run_id: str) -> dict:
    run = rt.engine.retrieve(session.env_id, run_id)
    rows, logs = timeline(run, rt.engine.events(session.env_id, run_id))
    reads = overview(rt)
    waitpoints = reads.run_waitpoints(session.env_id, run_id)
    return {"run": run, "rows": rows, "logs": logs, "waitpoints": waitpoints,
            "streams": Streams(rt.db).names(session.env_id, run_id),
            "checkpoint": reads.checkpoint(session.env_id, run_id), "live": not run.status.is_final}


@router.get("/runs/{run_id}")
async def run_page(request: Request, run_id: str, session: Auth, rt: Rt) -> Response:
    # The cursor first: whatever changes after it reaches the page over SSE (dashboard/live.py).
    cursor = await run_cursor(request, session.env_id, run_id)
    context = await run_in_threadpool(_run_context, session, rt, run_id)
    return page(request, "run.html", {**context, "cursor": str(cursor)})


@router.get("/runs/{run_id}/live")
def run_live(request: Request, run_id: str, session: Auth, rt: Rt) -> Response:
    """The live part of a run page, which the page polls while the run is not final."""
    return page(request, "run_live.html", _run_context(session, rt, run_id))


@router.get("/bulk/{job_id}")
def bulk_page(request: Request, job_id: str, session: Auth, rt: Rt, fragment: bool = False) -> Response:
    """A bulk job's progress; the page asks again every second until the job is done (`fragment`: that part)."""
    job = rt.engine.bulk.retrieve(session.env_id, job_id)
    return page(request, "bulk_progress.html" if fragment else "bulk_job.html", {"job": job})


@router.get("/tokens")
def tokens_page(request: Request, session: Auth, rt: Rt, cursor: str | None = None) -> Response:
    tokens = overview(rt).pending_tokens(session.env_id, limit=50, cursor=cursor)
    next_cursor = tokens[-1][0].id if len(tokens) == 50 else None
    return page(request, "tokens.html", {"tokens": tokens, "next_cursor": next_cursor})


@router.get("/schedules")
def schedules_page(request: Request, session: Auth, rt: Rt, cursor: str | None = None) -> Response:
    schedules = rt.scheduler.list(session.env_id, limit=50, cursor=cursor)
    return page(request, "schedules.html", {"schedules": schedules})


@router.get("/deployments")
def deployments_page(request: Request, session: Auth, rt: Rt) -> Response:
    tasks = rt.engine.list_tasks(session.env_id)
    versions = sorted({t.version for t in tasks})
    return page(request, "deployments.html", {"deployments": rt.deployments.list(session.env_id, 50),
                                              "versions": versions, "tasks": tasks})


@router.get("/queues")
def queues_page(request: Request, session: Auth, rt: Rt) -> Response:
    return page(request, "queues.html", {"queues": overview(rt).queues(session.env_id)})


@router.get("/env-vars")
async def env_vars_page(request: Request, session: Auth, rt: Rt) -> Response:
    variables = await run_in_threadpool(rt.env_vars.list, session.env_id)
    return page(request, "env_vars.html", {"variables": variables})


@router.get("/nodes")
def nodes_page(request: Request, session: Auth, rt: Rt) -> Response:
    supervisor = rt.supervisor or rt.deployed_supervisor
    health = {"node": rt.settings.node_id, "slots": rt.settings.slots,
              "database": "SQLite" if rt.db.is_sqlite else "PostgreSQL",
              "supervisor": supervisor is not None,
              "checkpoint_problem": supervisor.checkpoint_problem if supervisor is not None else None,
              "checkpoint_store": rt.settings.checkpoint_store or str(rt.settings.data_dir / "checkpoints")}
    reads = overview(rt)
    return page(request, "nodes.html", {"health": health, "nodes": reads.nodes(session.env_id),
                                        "failures": reads.recent_checkpoint_failures(session.env_id)})


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    return page(request, "login.html", {"next": next, "message": None})
