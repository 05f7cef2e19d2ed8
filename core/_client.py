"""HTTP clients for the runtime's API.

`Client` and `AsyncClient` share everything but sending: `_Requests` builds each `httpx.Request`,
`_parse` turns each response into a model or an exception.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from importlib import metadata
from typing import Any, TypedDict, TypeVar, Unpack
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from ._config import API_URL_ENV, CONNECT_TIMEOUT, ClientSettings, from_env
from ._errors import (
    APIError,
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RuntimeUnavailableError,
)
from ._trace import with_trace
from .wire import (
    API_PREFIX,
    BatchHandle,
    BatchItem,
    BatchTriggerRequest,
    CompleteTokenRequest,
    CreateTokenRequest,
    ErrorBody,
    PublicToken,
    PublicTokenRequest,
    QueueOptions,
    RescheduleRequest,
    Run,
    RunEvent,
    RunHandle,
    RunList,
    RunStatus,
    TriggerOptions,
    TriggerRequest,
    Waitpoint,
    WaitToken,
)

__all__ = [
    "AsyncClient",
    "Client",
    "RunFilters",
    "TriggerKwargs",
    "default_async_client",
    "default_client",
    "trigger_options",
]

try:
    USER_AGENT = f"outlast-python/{metadata.version('outlast')}"
except metadata.PackageNotFoundError:  # running from a source tree
    USER_AGENT = "outlast-python"

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

StatusFilter = str | RunStatus | Sequence[str | RunStatus] | None
TextFilter = str | Sequence[str] | None
DurationArg = float | str | timedelta


class TriggerKwargs(TypedDict, total=False):
    """Keyword arguments accepted by `trigger_options` (and `tasks.trigger(..., **options)`)."""

    idempotency_key: str | None
    idempotency_key_ttl: DurationArg | None
    delay: DurationArg | datetime | None
    ttl: DurationArg | None
    tags: str | Sequence[str] | None
    metadata: Mapping[str, Any] | None
    queue: str | QueueOptions | Mapping[str, Any] | None
    concurrency_key: str | None
    priority: int | None
    max_attempts: int | None
    max_duration: DurationArg | None
    machine: str | None
    version: str | None


class RunFilters(TypedDict, total=False):
    """Filters of `list_runs` / `iter_runs`; list values match any of them."""

    status: StatusFilter
    task: TextFilter
    tag: TextFilter
    created_after: datetime | None
    created_before: datetime | None
    limit: int
    cursor: str | None


# --- validation ---------------------------------------------------------------------------------


def _invalid(exc: ValidationError) -> InvalidRequestError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    reason = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        reason = "no such option"
    message = f"invalid {field}: {reason}" if field else reason
    details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
    body = {"error": "invalid_request", "message": message, "field": field, "details": details}
    return InvalidRequestError(message, field=field, body=body)


def _validate(model: type[M], data: Any) -> M:
    """`model.model_validate`, raising `InvalidRequestError` (with `.field`) instead of pydantic's error."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _clean_options(options: Mapping[str, Any]) -> dict[str, Any]:
    cleaned = {name: value for name, value in options.items() if value is not None}
    if isinstance(cleaned.get("tags"), str):
        cleaned["tags"] = [cleaned["tags"]]
    return cleaned


def trigger_options(**options: Unpack[TriggerKwargs]) -> TriggerOptions:
    """`TriggerOptions` from keyword arguments; `None` means "not set".

    Durations take seconds, a `timedelta` or a string like "90s" or "1h30m"; `delay` also takes a
    `datetime`. A bad or unknown option raises `InvalidRequestError` whose `.field` names it.
    """
    return _validate(TriggerOptions, _clean_options(options))


def _require_id(value: str, name: str) -> str:
    # An empty id would silently address another endpoint (`/runs/` lists runs).
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"{name} must be a non-empty string, got {value!r}", field=name)
    return quote(value, safe="")


def _statuses(value: StatusFilter) -> list[str]:
    values = [value] if isinstance(value, str) else list(value or [])
    out = []
    for item in values:
        try:
            out.append(RunStatus(item if isinstance(item, RunStatus) else str(item).strip().upper()).value)
        except ValueError:
            choices = ", ".join(s.value for s in RunStatus)
            raise InvalidRequestError(
                f"invalid status {item!r}; choose from {choices}", field="status"
            ) from None
    return out


def _texts(value: TextFilter) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value or []]


def _timestamp(value: datetime | str) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


# --- requests and responses -------------------------------------------------------------------------


class _Requests:
    """Builds every API request, headers and timeout included; the twins only send them."""

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
        params: list[tuple[str, str | int]] | None = None,
    ) -> httpx.Request:
        headers = dict(self.headers)
        content = None
        if body is not None:
            try:
                content = body.model_dump_json().encode()
            except PydanticSerializationError as exc:
                message = f"payload is not JSON-serializable: {exc}"
                raise InvalidRequestError(message, field="payload") from None
            headers["Content-Type"] = "application/json"
        return httpx.Request(
            method,
            f"{self.api_url}{API_PREFIX}{path}",
            params=params,
            content=content,
            headers=headers,
            extensions={"timeout": self.timeout.as_dict()},
        )

    def trigger(self, task_id: str, payload: Any, options: TriggerOptions | None) -> httpx.Request:
        path = f"/tasks/{_require_id(task_id, 'task_id')}/trigger"
        body = TriggerRequest(payload=payload, options=_traced(options or TriggerOptions()))
        return self.build("POST", path, body=body)

    def batch_trigger(self, items: Sequence[BatchItem]) -> httpx.Request:
        body = _validate(BatchTriggerRequest, {"items": list(items)})
        for item in body.items:
            item.options = _traced(item.options)
        return self.build("POST", "/tasks/batch-trigger", body=body)

    def public_token(self, runs: Sequence[str], tags: Sequence[str], ttl: DurationArg) -> httpx.Request:
        body = _validate(PublicTokenRequest, {"runs": list(runs), "tags": _texts(tags), "ttl": ttl})
        return self.build("POST", "/auth/public-tokens", body=body)

    def retrieve_run(self, run_id: str) -> httpx.Request:
        return self.build("GET", f"/runs/{_require_id(run_id, 'run_id')}")

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
    ) -> httpx.Request:
        params: list[tuple[str, str | int]] = [("status", s) for s in _statuses(status)]
        params += [("task", t) for t in _texts(task)]
        params += [("tag", t) for t in _texts(tag)]
        if created_after is not None:
            params.append(("created_after", _timestamp(created_after)))
        if created_before is not None:
            params.append(("created_before", _timestamp(created_before)))
        params.append(("limit", limit))
        if cursor:
            params.append(("cursor", cursor))
        return self.build("GET", "/runs", params=params)

    def run_events(self, run_id: str) -> httpx.Request:
        return self.build("GET", f"/runs/{_require_id(run_id, 'run_id')}/events")

    def cancel_run(self, run_id: str) -> httpx.Request:
        return self.build("POST", f"/runs/{_require_id(run_id, 'run_id')}/cancel")

    def replay_run(self, run_id: str) -> httpx.Request:
        return self.build("POST", f"/runs/{_require_id(run_id, 'run_id')}/replay")

    def reschedule_run(self, run_id: str, delay: DurationArg | datetime) -> httpx.Request:
        path = f"/runs/{_require_id(run_id, 'run_id')}/reschedule"
        return self.build("POST", path, body=_validate(RescheduleRequest, {"delay": delay}))

    def create_token(self, request: CreateTokenRequest) -> httpx.Request:
        return self.build("POST", "/waitpoints/tokens", body=request)

    def complete_token(self, token_id: str, data: Any) -> httpx.Request:
        path = f"/waitpoints/tokens/{_require_id(token_id, 'token_id')}/complete"
        return self.build("POST", path, body=CompleteTokenRequest(data=data))

    def retrieve_waitpoint(self, waitpoint_id: str) -> httpx.Request:
        return self.build("GET", f"/waitpoints/{_require_id(waitpoint_id, 'waitpoint_id')}")


def _traced(options: TriggerOptions) -> TriggerOptions:
    # The web request being served (see _trace.py) is named in the run's metadata.
    metadata = with_trace(options.metadata)
    return options if metadata is None else options.model_copy(update={"metadata": metadata})


_WAIT_TOKEN = TypeAdapter(WaitToken)
_WAITPOINT = TypeAdapter(Waitpoint)
_RUN = TypeAdapter(Run)
_PUBLIC_TOKEN = TypeAdapter(PublicToken)
_RUN_LIST = TypeAdapter(RunList)
_RUN_HANDLE = TypeAdapter(RunHandle)
_BATCH_HANDLE = TypeAdapter(BatchHandle)
_EVENTS = TypeAdapter(list[RunEvent])

_ERRORS: dict[int, type[APIError]] = {
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: InvalidRequestError,
}


def _api_error(response: httpx.Response) -> APIError:
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


def _parse(response: httpx.Response, adapter: TypeAdapter[T]) -> T:
    """The response body as `adapter`'s type, or the `APIError` its status means."""
    if response.is_error:
        raise _api_error(response)
    try:
        return adapter.validate_json(response.content)
    except ValidationError as exc:
        request = response.request
        raise APIError(
            f"unexpected answer to {request.method} {request.url.path} "
            f"(is {request.url.scheme}://{request.url.netloc.decode()} an outlast runtime?): {exc}",
            status_code=response.status_code,
        ) from None


def _unavailable(
    request: httpx.Request, exc: httpx.TransportError, timeout: httpx.Timeout
) -> RuntimeUnavailableError:
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


def _poll_wait(run: Run, interval: float, timeout: float | None, deadline: float | None) -> float:
    """Seconds to sleep before the next retrieve, or `TimeoutError` once the deadline has passed."""
    if deadline is None:
        return interval
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(f"run {run.id} is still {run.status.value} after waiting {timeout:g}s")
    return min(interval, remaining)


def _check_interval(interval: float) -> None:
    if not interval > 0:
        raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")


# --- the twins ------------------------------------------------------------------------------------


class _BaseClient:
    def __init__(self, api_url: str | None, secret_key: str | None, timeout: float | None) -> None:
        self.settings = from_env(api_url, secret_key, timeout)
        self._requests = _Requests(self.settings)

    @property
    def api_url(self) -> str:
        return self.settings.api_url

    def _http_options(self, limits: httpx.Limits | None) -> dict[str, Any]:
        options: dict[str, Any] = {"timeout": self._requests.timeout}
        if limits is not None:
            options["limits"] = limits
        return options

    def __repr__(self) -> str:
        return f"<{type(self).__name__} api_url={self.api_url!r}>"


class Client(_BaseClient):
    """Synchronous client of the runtime's API; safe to share between threads.

    Arguments not given come from `OUTLAST_API_URL`, `OUTLAST_SECRET_KEY` and `OUTLAST_TIMEOUT`.
    """

    def __init__(
        self,
        api_url: str | None = None,
        secret_key: str | None = None,
        *,
        timeout: float | None = None,
        transport: httpx.BaseTransport | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        super().__init__(api_url, secret_key, timeout)
        self._http = httpx.Client(transport=transport, **self._http_options(limits))

    def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            return self._http.send(request)
        except httpx.TransportError as exc:
            raise _unavailable(request, exc, self._requests.timeout) from exc

    def trigger(self, task_id: str, payload: Any = None, options: TriggerOptions | None = None) -> RunHandle:
        """Start a run of `task_id`; returns at once with the run's id."""
        return _parse(self._send(self._requests.trigger(task_id, payload, options)), _RUN_HANDLE)

    def batch_trigger(self, items: Sequence[BatchItem]) -> BatchHandle:
        """Start up to 1000 runs, of any tasks, in one request."""
        return _parse(self._send(self._requests.batch_trigger(items)), _BATCH_HANDLE)

    def retrieve_run(self, run_id: str) -> Run:
        return _parse(self._send(self._requests.retrieve_run(run_id)), _RUN)

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
    ) -> RunList:
        """One page of runs, newest first; pass `next_cursor` back as `cursor` for the next one."""
        request = self._requests.list_runs(
            status=status, task=task, tag=tag, created_after=created_after,
            created_before=created_before, limit=limit, cursor=cursor,
        )
        return _parse(self._send(request), _RUN_LIST)

    def iter_runs(self, **filters: Unpack[RunFilters]) -> Iterator[Run]:
        """Every run matching the filters, fetching pages of `limit` as needed."""
        while True:
            page = self.list_runs(**filters)
            yield from page.data
            if not page.next_cursor:
                return
            filters["cursor"] = page.next_cursor

    def run_events(self, run_id: str) -> list[RunEvent]:
        """The run's timeline: status changes, logs, attempts."""
        return _parse(self._send(self._requests.run_events(run_id)), _EVENTS)

    def cancel_run(self, run_id: str) -> Run:
        return _parse(self._send(self._requests.cancel_run(run_id)), _RUN)

    def replay_run(self, run_id: str) -> RunHandle:
        """Start a new run of the same task with the same payload."""
        return _parse(self._send(self._requests.replay_run(run_id)), _RUN_HANDLE)

    def reschedule_run(self, run_id: str, delay: DurationArg | datetime) -> Run:
        """Move a delayed run's start: a duration from now, or a point in time."""
        return _parse(self._send(self._requests.reschedule_run(run_id, delay)), _RUN)

    def create_token(self, request: CreateTokenRequest) -> WaitToken:
        """A waitpoint token (see `outlast.wait.create_token`)."""
        return _parse(self._send(self._requests.create_token(request)), _WAIT_TOKEN)

    def complete_token(self, token_id: str, data: Any = None) -> Waitpoint:
        """Complete a waitpoint token with `data`; the runs waiting for it continue."""
        return _parse(self._send(self._requests.complete_token(token_id, data)), _WAITPOINT)

    def retrieve_waitpoint(self, waitpoint_id: str) -> Waitpoint:
        return _parse(self._send(self._requests.retrieve_waitpoint(waitpoint_id)), _WAITPOINT)

    def create_public_token(self, runs: str | Sequence[str] = (), *, tags: str | Sequence[str] = (),
                            ttl: DurationArg = 900) -> PublicToken:
        """A short-lived token that lets a browser read these runs (or runs with any of these tags), nothing else."""
        return _parse(self._send(self._requests.public_token(_texts(runs), _texts(tags), ttl)), _PUBLIC_TOKEN)

    def poll(self, run_id: str, *, interval: float = 0.5, timeout: float | None = None) -> Run:
        """Retrieve the run every `interval` seconds until it is final; `TimeoutError` after `timeout`."""
        _check_interval(interval)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.retrieve_run(run_id)
            if run.is_final:
                return run
            time.sleep(_poll_wait(run, interval, timeout, deadline))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClient(_BaseClient):
    """Asynchronous twin of `Client`: the same methods, awaited (`iter_runs` is an async iterator)."""

    def __init__(
        self,
        api_url: str | None = None,
        secret_key: str | None = None,
        *,
        timeout: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        super().__init__(api_url, secret_key, timeout)
        self._http = httpx.AsyncClient(transport=transport, **self._http_options(limits))

    async def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._http.send(request)
        except httpx.TransportError as exc:
            raise _unavailable(request, exc, self._requests.timeout) from exc

    async def trigger(
        self, task_id: str, payload: Any = None, options: TriggerOptions | None = None
    ) -> RunHandle:
        """Start a run of `task_id`; returns at once with the run's id."""
        return _parse(await self._send(self._requests.trigger(task_id, payload, options)), _RUN_HANDLE)

    async def batch_trigger(self, items: Sequence[BatchItem]) -> BatchHandle:
        """Start up to 1000 runs, of any tasks, in one request."""
        return _parse(await self._send(self._requests.batch_trigger(items)), _BATCH_HANDLE)

    async def retrieve_run(self, run_id: str) -> Run:
        return _parse(await self._send(self._requests.retrieve_run(run_id)), _RUN)

    async def list_runs(
        self,
        *,
        status: StatusFilter = None,
        task: TextFilter = None,
        tag: TextFilter = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunList:
        """One page of runs, newest first; pass `next_cursor` back as `cursor` for the next one."""
        request = self._requests.list_runs(
            status=status, task=task, tag=tag, created_after=created_after,
            created_before=created_before, limit=limit, cursor=cursor,
        )
        return _parse(await self._send(request), _RUN_LIST)

    async def iter_runs(self, **filters: Unpack[RunFilters]) -> AsyncIterator[Run]:
        """Every run matching the filters, fetching pages of `limit` as needed."""
        while True:
            page = await self.list_runs(**filters)
            for run in page.data:
                yield run
            if not page.next_cursor:
                return
            filters["cursor"] = page.next_cursor

    async def run_events(self, run_id: str) -> list[RunEvent]:
        """The run's timeline: status changes, logs, attempts."""
        return _parse(await self._send(self._requests.run_events(run_id)), _EVENTS)

    async def cancel_run(self, run_id: str) -> Run:
        return _parse(await self._send(self._requests.cancel_run(run_id)), _RUN)

    async def replay_run(self, run_id: str) -> RunHandle:
        """Start a new run of the same task with the same payload."""
        return _parse(await self._send(self._requests.replay_run(run_id)), _RUN_HANDLE)

    async def reschedule_run(self, run_id: str, delay: DurationArg | datetime) -> Run:
        """Move a delayed run's start: a duration from now, or a point in time."""
        return _parse(await self._send(self._requests.reschedule_run(run_id, delay)), _RUN)

    async def create_token(self, request: CreateTokenRequest) -> WaitToken:
        """A waitpoint token (see `outlast.wait.create_token`)."""
        return _parse(await self._send(self._requests.create_token(request)), _WAIT_TOKEN)

    async def complete_token(self, token_id: str, data: Any = None) -> Waitpoint:
        """Complete a waitpoint token with `data`; the runs waiting for it continue."""
        return _parse(await self._send(self._requests.complete_token(token_id, data)), _WAITPOINT)

    async def retrieve_waitpoint(self, waitpoint_id: str) -> Waitpoint:
        return _parse(await self._send(self._requests.retrieve_waitpoint(waitpoint_id)), _WAITPOINT)

    async def create_public_token(self, runs: str | Sequence[str] = (), *, tags: str | Sequence[str] = (),
                                  ttl: DurationArg = 900) -> PublicToken:
        """A short-lived token that lets a browser read these runs (or runs with any of these tags), nothing else."""
        return _parse(await self._send(self._requests.public_token(_texts(runs), _texts(tags), ttl)), _PUBLIC_TOKEN)

    async def poll(self, run_id: str, *, interval: float = 0.5, timeout: float | None = None) -> Run:
        """Retrieve the run every `interval` seconds until it is final; `TimeoutError` after `timeout`."""
        _check_interval(interval)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = await self.retrieve_run(run_id)
            if run.is_final:
                return run
            await asyncio.sleep(_poll_wait(run, interval, timeout, deadline))

    async def close(self) -> None:
        await self._http.aclose()

    aclose = close

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


# --- shared default clients -------------------------------------------------------------------------

_default_lock = threading.Lock()
_default: Client | None = None
_async_defaults: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def default_client() -> Client:
    """The process-wide `Client`, built from the environment on first use.

    Thread-safe. A forked child builds its own, since pooled connections must not be shared
    across a fork (e.g. gunicorn workers).
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = Client()
        return _default


def default_async_client() -> AsyncClient:
    """The `AsyncClient` of the running event loop, built from the environment on first use there.

    One per loop, because connections belong to the loop that opened them. It keeps no idle
    connections, so nothing is left open when a loop ends without closing it (as `asyncio.run`
    does); for connection reuse, create an `AsyncClient` yourself and pass it as `client=`.
    """
    loop = asyncio.get_running_loop()
    client = _async_defaults.get(loop)
    if client is None:
        client = AsyncClient(limits=httpx.Limits(max_keepalive_connections=0))
        _async_defaults[loop] = client
    return client


def _forget_defaults() -> None:
    # Dropped, not closed: closing would shut connections the parent process still uses.
    global _default, _default_lock
    _default = None
    _default_lock = threading.Lock()
    _async_defaults.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_defaults)
