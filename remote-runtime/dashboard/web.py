"""Dashboard request plumbing: templates, the logged-in session, CSRF-checked forms, errors as HTML pages.

Dashboard routes use `DashboardRoute`, which turns what a handler raises into a page: no session
-> a redirect to the login page, an engine or validation error -> its 4xx with the message, a
refused form -> 403. Nothing a visitor types reaches a 500.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, unquote

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.responses import RedirectResponse, Response

from ..errors import EngineError
from ..state import RuntimeState
from .session import COOKIE, Session, Sessions

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


class LoginRequired(Exception):
    pass


class FormRefused(EngineError):
    status_code = 403
    code = "csrf_refused"


class BadInput(EngineError):
    status_code = 400
    code = "bad_request"


def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    session = getattr(request.state, "dashboard_session", None)
    sessions: Sessions = request.app.state.dashboard_sessions
    base = {"session": session, "csrf": sessions.csrf_token(session) if session else ""}
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


class DashboardRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                if "\x00" in unquote(request.url.path + "?" + request.url.query):
                    raise BadInput("the address holds a NUL character")  # PostgreSQL refuses it in text
                return await handler(request)
            except LoginRequired:
                return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
            except EngineError as exc:
                return page(request, "error.html", {"status": exc.status_code, "message": exc.message},
                            status_code=exc.status_code)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(p) for p in first.get("loc", ())[1:])
                message = f"{where}: {first.get('msg', 'invalid input')}" if where else "invalid input"
                return page(request, "error.html", {"status": 400, "message": message}, status_code=400)

        return handle


async def runtime(request: Request) -> RuntimeState:
    return request.app.state.outlast


async def current_session(request: Request) -> Session:
    session = request.app.state.dashboard_sessions.read(request.cookies.get(COOKIE))
    if session is None or session.env_id not in request.app.state.outlast.environments.ids():
        raise LoginRequired()
    request.state.dashboard_session = session
    return session


async def checked_form(request: Request, session: Annotated[Session, Depends(current_session)]) -> dict[str, list[str]]:
    """The urlencoded form of a POST, refused unless it carries this session's CSRF token."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    token = (form.get("csrf") or [request.headers.get("x-csrf-token", "")])[0]
    if not request.app.state.dashboard_sessions.csrf_ok(session, token):
        raise FormRefused("this form is not from this dashboard session (CSRF check failed): reload the page")
    if any("\x00" in value for values in form.values() for value in values):
        raise BadInput("the form holds a NUL character")
    return form


def local_path(target: str | None, default: str = "/") -> str:
    """A redirect target from a form, only if it stays on this site."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


Rt = Annotated[RuntimeState, Depends(runtime)]
Auth = Annotated[Session, Depends(current_session)]
Form = Annotated[dict[str, list[str]], Depends(checked_form)]
