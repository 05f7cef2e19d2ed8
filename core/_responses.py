"""Reading the runtime's answers: a model, or the exception its status (or a lost connection) means."""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from pydantic import TypeAdapter, ValidationError

from ._config import API_URL_ENV
from ._errors import (
    APIError,
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RuntimeUnavailableError,
)
from .wire import ErrorBody

__all__ = ["api_error", "parse", "parse_no_content", "unavailable"]

T = TypeVar("T")

_ERRORS: dict[int, type[APIError]] = {
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: InvalidRequestError,
}
_ANY: TypeAdapter[Any] = TypeAdapter(Any)


def api_error(response: httpx.Response) -> APIError:
    status = response.status_code
    cls = _ERRORS.get(status, APIError)
    try:
        body = ErrorBody.model_validate_json(response.content)
    except ValidationError:
        # Not the runtime's own error body: a proxy, a crash page, or another server on that port.
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        request = response.request
        message = f"{request.method} {request.url.path} failed with HTTP {status}: {text}"
        return cls(message, status_code=status)
    return cls(body.message, status_code=status, field=body.field, body=body.model_dump())


def parse(response: httpx.Response, adapter: TypeAdapter[T]) -> T:
    """The response body as `adapter`'s type, or the `APIError` its status means (503: `RuntimeUnavailableError`)."""
    if response.status_code == 503:
        request = response.request
        raise RuntimeUnavailableError(f"the outlast runtime could not serve {request.method} {request.url.path} "
                                      f"(HTTP 503): {api_error(response)}")
    if response.is_error:
        raise api_error(response)
    try:
        return adapter.validate_json(response.content)
    except ValidationError as exc:
        request = response.request
        raise APIError(
            f"unexpected answer to {request.method} {request.url.path} "
            f"(is {request.url.scheme}://{request.url.netloc.decode()} an outlast runtime?): {exc}",
            status_code=response.status_code,
        ) from None


def parse_no_content(response: httpx.Response) -> None:
    """An answer that should be 204: anything else must at least be a valid (JSON) answer."""
    if response.status_code != 204:
        parse(response, _ANY)


def unavailable(request: httpx.Request, exc: httpx.TransportError, timeout: httpx.Timeout) -> RuntimeUnavailableError:
    url = f"{request.url.scheme}://{request.url.netloc.decode()}"
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        message = f"timed out after {timeout.connect:g}s connecting to the outlast runtime at {url}"
    elif isinstance(exc, httpx.TimeoutException):
        message = f"the outlast runtime at {url} did not answer within {timeout.read:g}s"
        if request.method != "GET":
            message += f" ({request.method} {request.url.path} may still have taken effect)"
    elif isinstance(exc, httpx.ConnectError):
        message = (
            f"cannot connect to the outlast runtime at {url}: {reason} "
            f"(is it running? set {API_URL_ENV} to use another address)"
        )
    else:
        message = f"lost the connection to the outlast runtime at {url}: {reason}"
    return RuntimeUnavailableError(message)
