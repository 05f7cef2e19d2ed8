"""Every error answers with `wire.ErrorBody`: engine errors, validation, routing and the unexpected."""

from __future__ import annotations

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from outlast.wire import ErrorBody

from ..errors import EngineError


def _error_response(status: int, body: ErrorBody) -> JSONResponse:
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status)


async def _engine_error(_request: Request, exc: EngineError) -> JSONResponse:
    return _error_response(exc.status_code, ErrorBody(error=exc.code, message=exc.message, field=exc.field,
                                                          details=getattr(exc, "details", None)))


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    details = []
    for error in exc.errors():
        loc = list(error.get("loc", ()))
        source = loc.pop(0) if loc and loc[0] in ("body", "query", "path", "header") else None
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        if error.get("type") == "json_invalid":
            # loc is ("body", <character offset>): name the body, and say where the JSON broke.
            reason = (error.get("ctx") or {}).get("error") or message
            at = f" at character {loc[0]}" if loc and isinstance(loc[0], int) else ""
            loc, message = [], f"request body is not valid JSON: {reason}{at}"
        field = ".".join(str(part) for part in loc) or source
        details.append({"field": field, "message": message, "type": error.get("type")})
    first = details[0] if details else {"field": None, "message": "invalid request"}
    field = first["field"] or None
    message = first["message"] if not field or first["type"] == "json_invalid" else f"{field}: {first['message']}"
    return _error_response(422, ErrorBody(error="invalid_request", message=message, field=field, details=details))


async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Routing errors (unknown path, wrong method) answer with the same body as every other error.
    codes = {404: "not_found", 405: "method_not_allowed"}
    body = ErrorBody(error=codes.get(exc.status_code, "http_error"), message=str(exc.detail))
    response = _error_response(exc.status_code, body)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


# The database is away (restarting, unreachable, a connection cut): the request may be tried again.
DATABASE_UNAVAILABLE = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                        sqlalchemy.exc.DisconnectionError)
RETRY_AFTER_SECONDS = 1


async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    response = _error_response(503, ErrorBody(error="database_unavailable",
                                              message=f"the runtime's database is unavailable ({type(exc).__name__}); "
                                                      "try again shortly"))
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


async def _internal_error(_request: Request, exc: Exception) -> JSONResponse:
    # Details stay in the runtime's log (Starlette logs the exception after this answer is sent).
    return _error_response(500, ErrorBody(error="internal_error",
                                          message=f"internal error ({type(exc).__name__}); see the runtime's log"))


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(EngineError, _engine_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for error in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error, _database_unavailable)
    app.add_exception_handler(Exception, _internal_error)
