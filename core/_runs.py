"""The `runs` namespace: `from outlast import runs; runs.retrieve(run_id)`.

Each function uses the shared default client unless given `client=`; the `a`-prefixed twins are
coroutines (and `aiter` an async iterator) using the running loop's default `AsyncClient`.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Unpack

from ._client import AsyncClient, Client, DurationArg, RunFilters
from ._client import or_default as _sync
from ._client import or_default_async as _async
from ._realtime import subscribe, subscribe_to_batch, subscribe_to_tag
from .wire import Run, RunEvent, RunHandle, RunList

__all__ = [
    "acancel", "aevents", "aiter", "alist", "apoll", "areplay", "areschedule", "aretrieve",
    "cancel", "events", "iter", "list", "poll", "replay", "reschedule", "retrieve",
    "subscribe", "subscribe_to_batch", "subscribe_to_tag",  # sync and async iterators of changes (_realtime.py)
]


def retrieve(run_id: str, *, client: Client | None = None) -> Run:
    """The run's current state."""
    return _sync(client).retrieve_run(run_id)


def list(*, client: Client | None = None, **filters: Unpack[RunFilters]) -> RunList:
    """One page of runs matching the filters (status, task, tag, created_after/before, limit, cursor)."""
    return _sync(client).list_runs(**filters)


def iter(*, client: Client | None = None, **filters: Unpack[RunFilters]) -> Iterator[Run]:
    """Every run matching the filters, across pages."""
    return _sync(client).iter_runs(**filters)


def events(run_id: str, *, client: Client | None = None) -> builtins.list[RunEvent]:
    """The run's timeline: status changes, logs, attempts."""
    return _sync(client).run_events(run_id)


def cancel(run_id: str, *, client: Client | None = None) -> Run:
    return _sync(client).cancel_run(run_id)


def replay(run_id: str, *, client: Client | None = None) -> RunHandle:
    """Start a new run of the same task with the same payload."""
    return _sync(client).replay_run(run_id)


def reschedule(run_id: str, delay: DurationArg | datetime, *, client: Client | None = None) -> Run:
    """Move a delayed run's start: a duration from now, or a point in time."""
    return _sync(client).reschedule_run(run_id, delay)


def poll(
    run_id: str, *, interval: float = 0.5, timeout: float | None = None, client: Client | None = None
) -> Run:
    """Wait until the run is final and return it; `TimeoutError` after `timeout` seconds."""
    return _sync(client).poll(run_id, interval=interval, timeout=timeout)


async def aretrieve(run_id: str, *, client: AsyncClient | None = None) -> Run:
    """The run's current state."""
    return await _async(client).retrieve_run(run_id)


async def alist(*, client: AsyncClient | None = None, **filters: Unpack[RunFilters]) -> RunList:
    """One page of runs matching the filters (status, task, tag, created_after/before, limit, cursor)."""
    return await _async(client).list_runs(**filters)


async def aiter(*, client: AsyncClient | None = None, **filters: Unpack[RunFilters]) -> AsyncIterator[Run]:
    """Every run matching the filters, across pages."""
    async for run in _async(client).iter_runs(**filters):
        yield run


async def aevents(run_id: str, *, client: AsyncClient | None = None) -> builtins.list[RunEvent]:
    """The run's timeline: status changes, logs, attempts."""
    return await _async(client).run_events(run_id)


async def acancel(run_id: str, *, client: AsyncClient | None = None) -> Run:
    return await _async(client).cancel_run(run_id)


async def areplay(run_id: str, *, client: AsyncClient | None = None) -> RunHandle:
    """Start a new run of the same task with the same payload."""
    return await _async(client).replay_run(run_id)


async def areschedule(
    run_id: str, delay: DurationArg | datetime, *, client: AsyncClient | None = None
) -> Run:
    """Move a delayed run's start: a duration from now, or a point in time."""
    return await _async(client).reschedule_run(run_id, delay)


async def apoll(
    run_id: str, *, interval: float = 0.5, timeout: float | None = None, client: AsyncClient | None = None
) -> Run:
    """Wait until the run is final and return it; `TimeoutError` after `timeout` seconds."""
    return await _async(client).poll(run_id, interval=interval, timeout=timeout)
