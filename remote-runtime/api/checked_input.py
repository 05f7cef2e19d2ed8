"""Every route's input checked before the endpoint: a JSON body (see `wire.json_values`) and the
path and query parameters (no NUL, bounded length), each refused with 422 naming the field."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from outlast.wire.json_values import JSONValueError, loads_checked, string_problem

from ..errors import EngineError

MAX_PARAMETER_LENGTH = 1024


class InvalidInput(EngineError):
    status_code = 422
    code = "invalid_request"


class CheckedJSONRequest(Request):
    """A request whose `json()` is the checked document (FastAPI reads the body through it)."""

    async def json(self) -> Any:
        if not hasattr(self, "_checked_json"):
            try:
                self._checked_json = loads_checked(await self.body())
            except JSONValueError as exc:
                raise InvalidInput(exc.message, field=exc.field or "body") from None
        return self._checked_json


def _is_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return not content_type or content_type == "application/json" or content_type.endswith("+json")


def check_parameters(request: Request) -> None:
    """422 for a path or query parameter the store could not hold or that no id is as long as."""
    parameters = [*request.path_params.items(), *request.query_params.multi_items()]
    for name, value in parameters:
        if not isinstance(value, str):
            continue
        problem = string_problem(value)
        if problem is None and len(value) > MAX_PARAMETER_LENGTH:
            problem = f"must be at most {MAX_PARAMETER_LENGTH} characters"
        if problem:
            raise InvalidInput(f"{name}: {problem}", field=name)


class CheckedRoute(APIRoute):
    """The route class of every router: parameters and JSON bodies are checked before anything runs."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            request = CheckedJSONRequest(request.scope, request.receive)
            check_parameters(request)
            if request.method in ("POST", "PUT", "PATCH") and _is_json(request) and (await request.body()).strip():
                await request.json()  # raises InvalidInput before the endpoint runs
            return await handler(request)

        return checked
