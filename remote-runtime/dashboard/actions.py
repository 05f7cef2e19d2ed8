"""The dashboard's forms (POST): log in and out, cancel and replay (one run or a selection), complete a
token, promote and roll back, switch a schedule. Every form but the login carries the session's CSRF token."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from outlast.wire import BulkActionKind

from .session import COOKIE, SESSION_SECONDS
from .web import BadInput, DashboardRoute, Form, Rt, local_path, page

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)
MAX_SELECTION = 500


def _one(form: dict[str, list[str]], name: str, default: str = "") -> str:
    return (form.get(name) or [default])[0]


def _back(form: dict[str, list[str]], default: str) -> RedirectResponse:
    return RedirectResponse(local_path(_one(form, "next"), default), status_code=303)


@router.post("/login")
async def login(request: Request, rt: Rt) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    key, target = _one(form, "secret_key").strip(), local_path(_one(form, "next"))
    env_id = await run_in_threadpool(rt.environments.authenticate, key) if key else None
    if env_id is None:
        return page(request, "login.html", {"next": target, "message": "That secret key matches no environment."},
                    status_code=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, request.app.state.dashboard_sessions.issue(env_id), max_age=SESSION_SECONDS,
                        httponly=True, samesite="lax", secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout(form: Form) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.post("/runs/bulk")
def bulk(request: Request, form: Form, rt: Rt) -> Response:
    """Cancel or replay the selected runs as one durable bulk job (engine/bulk.py: the runtime works through it
    even if this page is closed or the runtime restarts); its page shows the progress."""
    env_id = request.state.dashboard_session.env_id
    selected, action = form.get("run", []), _one(form, "action")
    if action not in ("cancel", "replay"):
        raise BadInput("action: choose cancel or replay", field="action")
    if not selected:
        raise BadInput("select at least one run", field="run")
    if len(selected) > MAX_SELECTION:
        raise BadInput(f"select at most {MAX_SELECTION} runs at once", field="run")
    job = rt.engine.bulk.create_for_runs(env_id, BulkActionKind(action), list(dict.fromkeys(selected)))
    return RedirectResponse(f"/bulk/{job.id}", status_code=303)


@router.post("/runs/{run_id}/cancel")
def cancel(request: Request, run_id: str, form: Form, rt: Rt) -> Response:
    rt.engine.cancel(request.state.dashboard_session.env_id, run_id)
    return _back(form, f"/runs/{run_id}")


@router.post("/runs/{run_id}/replay")
def replay(request: Request, run_id: str, form: Form, rt: Rt) -> Response:
    handle = rt.engine.replay(request.state.dashboard_session.env_id, run_id)
    return RedirectResponse(f"/runs/{handle.id}", status_code=303)


@router.post("/tokens/{token_id}/complete")
def complete_token(request: Request, token_id: str, form: Form, rt: Rt) -> Response:
    """Approve (data {"approved": true}) or complete with the JSON typed in the form."""
    data: Any
    if _one(form, "approve"):
        data = {"approved": True}
    else:
        try:
            data = json.loads(_one(form, "data", "null") or "null")
        except ValueError as exc:
            raise BadInput(f"data: not valid JSON ({exc})", field="data") from None
    rt.engine.waits.complete_token(request.state.dashboard_session.env_id, token_id, data)
    return _back(form, "/tokens")


@router.post("/deployments/promote")
def promote(request: Request, form: Form, rt: Rt) -> Response:
    rt.deployments.promote(request.state.dashboard_session.env_id, _one(form, "version") or None)
    return _back(form, "/deployments")


@router.post("/deployments/rollback")
def rollback(request: Request, form: Form, rt: Rt) -> Response:
    rt.deployments.rollback(request.state.dashboard_session.env_id)
    return _back(form, "/deployments")


@router.post("/schedules/{schedule_id}/active")
def set_active(request: Request, schedule_id: str, form: Form, rt: Rt) -> Response:
    rt.scheduler.set_active(request.state.dashboard_session.env_id, schedule_id, _one(form, "active") == "1")
    return _back(form, "/schedules")
