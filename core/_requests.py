"""The one request builder: every API request, headers and timeout included, built once for both clients.

A builder method returns an `ApiCall`: the `httpx.Request` and how to read its answer. `Client`
sends it with the sync transport, `AsyncClient` with the async one; the namespaces (schedules,
deployments) build their calls on the same `RequestBuilder.call`.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import metadata
from typing import Any, Generic, Protocol, TypedDict, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticSerializationError

from ._config import CONNECT_TIMEOUT, ClientSettings
from ._errors import InvalidRequestError
from ._responses import parse, parse_no_content
from ._trace import with_trace
from ._validation import require_id, validate
from .wire import (
    API_PREFIX,
    BatchHandle,
    BatchItem,
    BatchTriggerRequest,
    CompleteTokenRequest,
    CreateTokenRequest,
    PublicToken,
    PublicTokenRequest,
    RescheduleRequest,
    Run,
    RunEvent,
    RunHandle,
    RunList,
    RunStatus,
    TaskInfo,
    TriggerOptions,
    TriggerRequest,
    Waitpoint,
    WaitToken,
)

__all__ = ["USER_AGENT", "ApiCall", "AsyncSender", "RequestBuilder", "RunFilters", "Sender", "texts"]

try:
    USER_AGENT = f"outlast-python/{metadata.version('outlast')}"
except metadata.PackageNotFoundError:  # running from a source tree
    USER_AGENT = "outlast-python"

T = TypeVar("T")

StatusFilter = str | RunStatus | Sequence[str | RunStatus] | None
TextFilter = str | Sequence[str] | None
DurationArg = float | str | timedelta
Params = list[tuple[str, str | int]]


class RunFilters(TypedDict, total=False):
    """Filters of `list_runs` / `iter_runs`; list values match any of them."""

    status: StatusFilter
    task: TextFilter
    tag: TextFilter
    created_after: datetime | None
    created_before: datetime | None
    limit: int
    cursor: str | None


@dataclass(frozen=True)
class ApiCall(Generic[T]):
    """One request to the runtime and how to read its answer."""

    request: httpx.Request
    read: Callable[[httpx.Response], T]
    repeatable: bool = False  # safe to send again (see _retry.py): reads, cancel, keyed triggers


class Sender(Protocol):
    """What a namespace needs of `Client`: the builder, and sending a call."""

    @property
    def requests(self) -> RequestBuilder: ...

    def execute(self, call: ApiCall[T]) -> T: ...


class AsyncSender(Protocol):
    """What a namespace needs of `AsyncClient`."""

    @property
    def requests(self) -> RequestBuilder: ...

    def execute(self, call: ApiCall[T]) -> Awaitable[T]: ...


def texts(value: TextFilter) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value or []]


def _statuses(value: StatusFilter) -> list[str]:
    values = [value] if isinstance(value, str) else list(value or [])
    out = []
    for item in values:
        try:
            out.append(RunStatus(item if isinstance(item, RunStatus) else str(item).strip().upper()).value)
        except ValueError:
            choices = ", ".join(s.value for s in RunStatus)
            raise InvalidRequestError(f"invalid status {item!r}; choose from {choices}", field="status") from None
    return out


def _timestamp(value: datetime | str) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _traced(options: TriggerOptions) -> TriggerOptions:
    # The web request being served (see _trace.py) is named in the run's metadata.
    metadata = with_trace(options.metadata)
    return options if metadata is None else options.model_copy(update={"metadata": metadata})


def _reader(answer: TypeAdapter[T] | None) -> Callable[[httpx.Response], Any]:
    if answer is None:
        return parse_no_content
    return lambda response: parse(response, answer)


_WAIT_TOKEN = TypeAdapter(WaitToken)
_WAITPOINT = TypeAdapter(Waitpoint)
_RUN = TypeAdapter(Run)
_PUBLIC_TOKEN = TypeAdapter(PublicToken)
_RUN_LIST = TypeAdapter(RunList)
_RUN_HANDLE = TypeAdapter(RunHandle)
_BATCH_HANDLE = TypeAdapter(BatchHandle)
_EVENTS = TypeAdapter(list[RunEvent])
_TASKS = TypeAdapter(list[TaskInfo])


class RequestBuilder:
    """Builds every API request of one client: its URL, key, user agent, commit and timeout."""

    def __init__(self, settings: ClientSettings) -> None:
        self.api_url = settings.api_url
        self.timeout = httpx.Timeout(settings.timeout, connect=min(CONNECT_TIMEOUT, settings.timeout))
        self.headers = {
            "Authorization": f"Bearer {settings.require_secret_key()}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        # The commit of the code that triggers (Vercel sets VERCEL_GIT_COMMIT_SHA in its functions): the
        # runtime locks the runs to the task version built from the same commit, when there is one.
        commit = os.environ.get("OUTLAST_GIT_COMMIT") or os.environ.get("VERCEL_GIT_COMMIT_SHA")
        if commit:
            self.headers["X-Outlast-Commit"] = commit.strip()

    def build(
        self,
        method: str,
        path: str,
        *,
        body: BaseModel | None = None,
        params: Params | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Request:
        """The request; `body` is sent as JSON, or `content` as raw bytes of `content_type`."""
        headers = dict(self.headers)
        if body is not None:
            try:
                content = body.model_dump_json().encode()
            except PydanticSerializationError as exc:
                message = f"payload is not JSON-serializable: {exc}"
                raise InvalidRequestError(message, field="payload") from None
            content_type = "application/json"
        if content_type is not None:
            headers["Content-Type"] = content_type
        return httpx.Request(
            method,
            f"{self.api_url}{API_PREFIX}{path}",
            params=params,
            content=content,
            headers=headers,
            extensions={"timeout": (timeout or self.timeout).as_dict()},
        )

    def call(self, method: str, path: str, answer: TypeAdapter[T] | None, *, repeatable: bool | None = None,
             **request: Any) -> ApiCall[T]:
        """`build(method, path, **request)` with how to read the answer (None: no body, 204).

        `repeatable` defaults to True for GET only."""
        return ApiCall(self.build(method, path, **request), _reader(answer),
                       method == "GET" if repeatable is None else repeatable)

    # --- triggering ----------------------------------------------------------------------------

    def trigger(self, task_id: str, payload: Any, options: TriggerOptions | None) -> ApiCall[RunHandle]:
        path = f"/tasks/{require_id(task_id, 'task_id')}/trigger"
        body = TriggerRequest(payload=payload, options=_traced(options or TriggerOptions()))
        return self.call("POST", path, _RUN_HANDLE, body=body, repeatable=body.options.idempotency_key is not None)

    def batch_trigger(self, items: Sequence[BatchItem]) -> ApiCall[BatchHandle]:
        body = validate(BatchTriggerRequest, {"items": list(items)})
        for item in body.items:
            item.options = _traced(item.options)
        keyed = all(item.options.idempotency_key is not None for item in body.items)
        return self.call("POST", "/tasks/batch-trigger", _BATCH_HANDLE, body=body, repeatable=keyed)

    def list_tasks(self) -> ApiCall[list[TaskInfo]]:
        return self.call("GET", "/tasks", _TASKS)

    # --- runs ----------------------------------------------------------------------------------

    def retrieve_run(self, run_id: str) -> ApiCall[Run]:
        return self.call("GET", f"/runs/{require_id(run_id, 'run_id')}", _RUN)

    def list_runs(
        self,
        *,
        status: StatusFilter = None,
        task: TextFilter = None,
        tag: TextFilter = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ApiCall[RunList]:
        params: Params = [("status", s) for s in _statuses(status)]
        params += [("task", t) for t in texts(task)]
        params += [("tag", t) for t in texts(tag)]
        if created_after is not None:
            params.append(("created_after", _timestamp(created_after)))
        if created_before is not None:
            params.append(("created_before", _timestamp(created_before)))
        params.append(("limit", limit))
        if cursor:
            params.append(("cursor", cursor))
        return self.call("GET", "/runs", _RUN_LIST, params=params)

    def run_events(self, run_id: str) -> ApiCall[list[RunEvent]]:
        return self.call("GET", f"/runs/{require_id(run_id, 'run_id')}/events", _EVENTS)

    def cancel_run(self, run_id: str) -> ApiCall[Run]:
        return self.call("POST", f"/runs/{require_id(run_id, 'run_id')}/cancel", _RUN, repeatable=True)

    def replay_run(self, run_id: str) -> ApiCall[RunHandle]:
        return self.call("POST", f"/runs/{require_id(run_id, 'run_id')}/replay", _RUN_HANDLE)

    def reschedule_run(self, run_id: str, delay: DurationArg | datetime) -> ApiCall[Run]:
        path = f"/runs/{require_id(run_id, 'run_id')}/reschedule"
        return self.call("POST", path, _RUN, body=validate(RescheduleRequest, {"delay": delay}))

    # --- tokens and waitpoints -------------------------------------------------------------------

    def create_public_token(self, runs: Sequence[str], tags: Sequence[str], ttl: DurationArg) -> ApiCall[PublicToken]:
        body = validate(PublicTokenRequest, {"runs": list(runs), "tags": texts(tags), "ttl": ttl})
        return self.call("POST", "/auth/public-tokens", _PUBLIC_TOKEN, body=body)

    def create_token(self, request: CreateTokenRequest) -> ApiCall[WaitToken]:
        return self.call("POST", "/waitpoints/tokens", _WAIT_TOKEN, body=request)

    def complete_token(self, token_id: str, data: Any) -> ApiCall[Waitpoint]:
        path = f"/waitpoints/tokens/{require_id(token_id, 'token_id')}/complete"
        return self.call("POST", path, _WAITPOINT, body=CompleteTokenRequest(data=data))

    def retrieve_waitpoint(self, waitpoint_id: str) -> ApiCall[Waitpoint]:
        return self.call("GET", f"/waitpoints/{require_id(waitpoint_id, 'waitpoint_id')}", _WAITPOINT)

