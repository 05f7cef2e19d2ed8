"""Exceptions users can catch. Every API error carries the HTTP status and the runtime's message."""

from __future__ import annotations

from typing import Any


class OutlastError(Exception):
    """Base of every exception outlast raises."""


class ConfigurationError(OutlastError):
    """A required setting (API URL, secret key, project layout) is missing or wrong."""


class RuntimeUnavailableError(OutlastError):
    """The runtime could not be reached in time (connection refused, DNS, timeout)."""


class APIError(OutlastError):
    """The runtime answered with an error status."""

    status_code: int = 0

    def __init__(self, message: str, *, status_code: int | None = None, field: str | None = None,
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code
        self.field = field
        self.body = body or {}


class AuthenticationError(APIError):
    status_code = 401


class NotFoundError(APIError):
    status_code = 404


class ConflictError(APIError):
    status_code = 409


class PayloadTooLargeError(APIError):
    status_code = 413


class InvalidRequestError(APIError):
    """422: the request or the payload does not validate; `field` names what is wrong."""

    status_code = 422


class AbortTaskRunError(OutlastError):
    """Raise inside a task to fail the run at once, without the remaining retries."""


class RunFailedError(OutlastError):
    """A run waited for ended in a status other than COMPLETED."""

    def __init__(self, run: Any) -> None:
        detail = f": {run.error.type}: {run.error.message}" if run.error else ""
        super().__init__(f"run {run.id} ended {run.status.value}{detail}")
        self.run = run
