"""Framework-neutral requests and responses: what every adapter converts to and from."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from outlast._client import AsyncClient
from outlast.wire import ErrorBody

from ._settings import AdapterSettings, WebhookRoute

__all__ = ["AdapterRequest", "AdapterResponse", "Dispatcher", "error_response", "json_response"]


class Dispatcher(Protocol):
    """What a handler reaches through `request.endpoints`: the `AdapterEndpoints` that dispatched it."""

    settings: AdapterSettings
    webhooks: dict[str, WebhookRoute]

    def async_client(self) -> AsyncClient: ...

    def declared_tasks(self) -> list[str]: ...


@dataclass
class AdapterRequest:
    """One HTTP request, as every framework adapter hands it to the core.

    `path` is relative to the mount prefix (`/runs/run_123`, not `/outlast/runs/run_123`).
    `headers` keys are lower-case. `query` keeps the first value of each parameter.
    `path_params` is filled in by the route table from the `{name}` parts of the matched route.
    `endpoints` is the table that dispatched the request: handlers reach the client through it
    (`request.endpoints.async_client()`).
    """

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    query: Mapping[str, str] = field(default_factory=dict)
    path_params: dict[str, str] = field(default_factory=dict)
    endpoints: Dispatcher | None = None

    def __post_init__(self) -> None:
        self.method = self.method.upper()
        self.headers = {name.lower(): value for name, value in self.headers.items()}

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        """The body parsed as JSON; `ValueError` if it is not JSON."""
        return json.loads(self.body or b"null")

    def bearer_token(self) -> str | None:
        """`Authorization: Bearer <token>`, or the `token` query parameter (EventSource cannot set headers)."""
        auth = self.header("authorization") or ""
        if auth.lower().startswith("bearer ") and auth[7:].strip():
            return auth[7:].strip()
        return self.query.get("token") or None


@dataclass
class AdapterResponse:
    """What a handler answers: a status, headers, and either a body or an async iterator of chunks.

    A `stream` (Server-Sent Events) is sent chunk by chunk as the iterator yields; adapters must not
    buffer it.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None

    @property
    def media_type(self) -> str | None:
        return self.headers.get("content-type")


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> AdapterResponse:
    body = json.dumps(data, default=str, separators=(",", ":")).encode()
    return AdapterResponse(status, {"content-type": "application/json", **(headers or {})}, body)


def error_response(status: int, error: str, message: str, field: str | None = None) -> AdapterResponse:
    """The runtime's error shape (`ErrorBody`), so browsers see one kind of error from both."""
    body = ErrorBody(error=error, message=message, field=field).model_dump(exclude_none=True)
    return json_response(body, status)
