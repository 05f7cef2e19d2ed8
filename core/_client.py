"""HTTP clients for the runtime's API.

`Client` and `AsyncClient` share everything but sending: their `requests` (a `RequestBuilder`)
builds each call, request and answer reader together; `execute` sends it with the sync or async
transport. The twins' methods are one line each, and so are those of their `schedules` and
`deployments` namespaces.
"""

# long-module: the twin clients, one line per API method each, and their shared retrying send.
from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypedDict, TypeVar, Unpack

import httpx

from ._bulk import AsyncBulk, Bulk
from ._config import ClientSettings, from_env
from ._deployments import AsyncDeployments, Deployments
from ._polling import poll_until, poll_until_async
from ._queues_client import AsyncQueues, Queues
from ._requests import ApiCall, DurationArg, RequestBuilder, RunFilters, texts
from ._responses import unavailable
from ._retry import Backoff
from ._schedules_client import AsyncSchedules, Schedules
from ._validation import clean_options, validate
from .wire import (
    BatchHandle,
    BatchItem,
    CreateTokenRequest,
    DebounceOptions,
    PublicToken,
    QueueOptions,
    Run,
    RunEvent,
    RunHandle,
    RunList,
    TriggerOptions,
    Waitpoint,
    WaitToken,
)

__all__ = [
    "AsyncClient",
    "Client",
    "DurationArg",
    "RunFilters",
    "TriggerKwargs",
    "default_async_client",
    "default_client",
    "or_default",
    "or_default_async",
    "trigger_options",
]

T = TypeVar("T")


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
    debounce: DebounceOptions | Mapping[str, Any] | None  # {"key": ..., "delay": "5s", "max_delay", "mode"}


def trigger_options(**options: Unpack[TriggerKwargs]) -> TriggerOptions:
    """`TriggerOptions` from keyword arguments; `None` means "not set".

    Durations take seconds, a `timedelta` or a string like "90s" or "1h30m"; `delay` also takes a
    `datetime`. A bad or unknown option raises `InvalidRequestError` whose `.field` names it.
    """
    return validate(TriggerOptions, clean_options(options))


def _is_final(run: Run) -> bool:
    return run.is_final


def _still(run: Run) -> str:
    return f"run {run.id} is still {run.status.value}"


# --- the twins ------------------------------------------------------------------------------------


class _BaseClient:
    def __init__(self, api_url: str | None, secret_key: str | None, timeout: float | None,
                 retry_for: float | None) -> None:
        self.settings: ClientSettings = from_env(api_url, secret_key, timeout, retry_for=retry_for)
        self.requests = RequestBuilder(self.settings)
        """Builds every call this client sends (`execute(client.requests.retrieve_run(...))`)."""

    @property
    def api_url(self) -> str:
        return self.settings.api_url

    def _http_options(self, limits: httpx.Limits | None) -> dict[str, Any]:
        options: dict[str, Any] = {"timeout": self.requests.timeout}
        if limits is not None:
            options["limits"] = limits
        return options

    def __repr__(self) -> str:
        return f"<{type(self).__name__} api_url={self.api_url!r}>"


class Client(_BaseClient):
    """Synchronous client of the runtime's API; safe to share between threads.

    Arguments not given come from `OUTLAST_API_URL`, `OUTLAST_SECRET_KEY`, `OUTLAST_TIMEOUT` and
    `OUTLAST_RETRY_FOR` (seconds a repeatable call is retried while the runtime is unreachable or
    answers 503; 30 by default, 0 for no retries).
    `client.schedules` and `client.deployments` manage schedules, deployments and env vars; `client.bulk`
    cancels or replays every run matching a filter.
    """

    def __init__(
        self,
        api_url: str | None = None,
        secret_key: str | None = None,
        *,
        timeout: float | None = None,
        retry_for: float | None = None,
        transport: httpx.BaseTransport | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        super().__init__(api_url, secret_key, timeout, retry_for)
        self._http = httpx.Client(transport=transport, **self._http_options(limits))
        self.schedules = Schedules(self)
        self.deployments = Deployments(self)
        self.bulk = Bulk(self)
        self.queues = Queues(self)

    def execute(self, call: ApiCall[T]) -> T:
        """Send a call built by `self.requests` and read its answer (an `APIError` for an error status)."""
        backoff = Backoff(self.settings.retry_for if call.repeatable else 0)
        while True:
            try:
                response = self._http.send(call.request)
            except httpx.TransportError as exc:
                if (pause := backoff.next_pause()) is None:
                    raise unavailable(call.request, exc, self.requests.timeout) from exc
            else:
                if response.status_code != 503 or (pause := backoff.next_pause(response)) is None:
                    return call.read(response)
            time.sleep(pause)

    def trigger(self, task_id: str, payload: Any = None, options: TriggerOptions | None = None) -> RunHandle:
        """Start a run of `task_id`; returns at once with the run's id."""
        return self.execute(self.requests.trigger(task_id, payload, options))

    def batch_trigger(self, items: Sequence[BatchItem]) -> BatchHandle:
        """Start up to 1000 runs, of any tasks, in one request."""
        return self.execute(self.requests.batch_trigger(items))

    def retrieve_run(self, run_id: str) -> Run:
        return self.execute(self.requests.retrieve_run(run_id))

    def list_runs(self, **filters: Unpack[RunFilters]) -> RunList:
        """One page of runs, newest first; pass `next_cursor` back as `cursor` for the next one.

        Filters: status, task, tag (each one value or several), created_after, created_before,
        limit (default 50), cursor.
        """
        return self.execute(self.requests.list_runs(**filters))

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
        return self.execute(self.requests.run_events(run_id))

    def cancel_run(self, run_id: str) -> Run:
        return self.execute(self.requests.cancel_run(run_id))

    def replay_run(self, run_id: str) -> RunHandle:
        """Start a new run of the same task with the same payload."""
        return self.execute(self.requests.replay_run(run_id))

    def reschedule_run(self, run_id: str, delay: DurationArg | datetime) -> Run:
        """Move a delayed run's start: a duration from now, or a point in time."""
        return self.execute(self.requests.reschedule_run(run_id, delay))

    def create_token(self, request: CreateTokenRequest) -> WaitToken:
        """A waitpoint token (see `outlast.wait.create_token`)."""
        return self.execute(self.requests.create_token(request))

    def complete_token(self, token_id: str, data: Any = None) -> Waitpoint:
        """Complete a waitpoint token with `data`; the runs waiting for it continue."""
        return self.execute(self.requests.complete_token(token_id, data))

    def retrieve_waitpoint(self, waitpoint_id: str) -> Waitpoint:
        return self.execute(self.requests.retrieve_waitpoint(waitpoint_id))

    def create_public_token(self, runs: str | Sequence[str] = (), *, tags: str | Sequence[str] = (),
                            ttl: DurationArg = 900) -> PublicToken:
        """A short-lived token that lets a browser read these runs (or runs with any of these tags), nothing else."""
        return self.execute(self.requests.create_public_token(texts(runs), texts(tags), ttl))

    def poll(self, run_id: str, *, interval: float = 0.5, timeout: float | None = None) -> Run:
        """Retrieve the run every `interval` seconds until it is final; `TimeoutError` after `timeout`."""
        return poll_until(lambda: self.retrieve_run(run_id), _is_final, _still, interval=interval, timeout=timeout)

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
        retry_for: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        super().__init__(api_url, secret_key, timeout, retry_for)
        self._http = httpx.AsyncClient(transport=transport, **self._http_options(limits))
        self.schedules = AsyncSchedules(self)
        self.deployments = AsyncDeployments(self)
        self.bulk = AsyncBulk(self)
        self.queues = AsyncQueues(self)

    async def execute(self, call: ApiCall[T]) -> T:
        """Send a call built by `self.requests` and read its answer (an `APIError` for an error status)."""
        backoff = Backoff(self.settings.retry_for if call.repeatable else 0)
        while True:
            try:
                response = await self._http.send(call.request)
            except httpx.TransportError as exc:
                if (pause := backoff.next_pause()) is None:
                    raise unavailable(call.request, exc, self.requests.timeout) from exc
            else:
                if response.status_code != 503 or (pause := backoff.next_pause(response)) is None:
                    return call.read(response)
            await asyncio.sleep(pause)

    async def trigger(self, task_id: str, payload: Any = None, options: TriggerOptions | None = None) -> RunHandle:
        """Start a run of `task_id`; returns at once with the run's id."""
        return await self.execute(self.requests.trigger(task_id, payload, options))

    async def batch_trigger(self, items: Sequence[BatchItem]) -> BatchHandle:
        """Start up to 1000 runs, of any tasks, in one request."""
        return await self.execute(self.requests.batch_trigger(items))

    async def retrieve_run(self, run_id: str) -> Run:
        return await self.execute(self.requests.retrieve_run(run_id))

    async def list_runs(self, **filters: Unpack[RunFilters]) -> RunList:
        """One page of runs, newest first (the filters of `Client.list_runs`)."""
        return await self.execute(self.requests.list_runs(**filters))

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
        return await self.execute(self.requests.run_events(run_id))

    async def cancel_run(self, run_id: str) -> Run:
        return await self.execute(self.requests.cancel_run(run_id))

    async def replay_run(self, run_id: str) -> RunHandle:
        """Start a new run of the same task with the same payload."""
        return await self.execute(self.requests.replay_run(run_id))

    async def reschedule_run(self, run_id: str, delay: DurationArg | datetime) -> Run:
        """Move a delayed run's start: a duration from now, or a point in time."""
        return await self.execute(self.requests.reschedule_run(run_id, delay))

    async def create_token(self, request: CreateTokenRequest) -> WaitToken:
        """A waitpoint token (see `outlast.wait.create_token`)."""
        return await self.execute(self.requests.create_token(request))

    async def complete_token(self, token_id: str, data: Any = None) -> Waitpoint:
        """Complete a waitpoint token with `data`; the runs waiting for it continue."""
        return await self.execute(self.requests.complete_token(token_id, data))

    async def retrieve_waitpoint(self, waitpoint_id: str) -> Waitpoint:
        return await self.execute(self.requests.retrieve_waitpoint(waitpoint_id))

    async def create_public_token(self, runs: str | Sequence[str] = (), *, tags: str | Sequence[str] = (),
                                  ttl: DurationArg = 900) -> PublicToken:
        """A short-lived token that lets a browser read these runs (or runs with any of these tags), nothing else."""
        return await self.execute(self.requests.create_public_token(texts(runs), texts(tags), ttl))

    async def poll(self, run_id: str, *, interval: float = 0.5, timeout: float | None = None) -> Run:
        """Retrieve the run every `interval` seconds until it is final; `TimeoutError` after `timeout`."""
        return await poll_until_async(lambda: self.retrieve_run(run_id), _is_final, _still, interval=interval,
                                      timeout=timeout)

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


def or_default(client: Client | None) -> Client:
    """`client`, or the process-wide default one (what every `client=None` argument means)."""
    return client if client is not None else default_client()


def or_default_async(client: AsyncClient | None) -> AsyncClient:
    """`client`, or the running loop's default `AsyncClient`."""
    return client if client is not None else default_async_client()


def _forget_defaults() -> None:
    # Dropped, not closed: closing would shut connections the parent process still uses.
    global _default, _default_lock
    _default = None
    _default_lock = threading.Lock()
    _async_defaults.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_defaults)
