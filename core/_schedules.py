"""The `schedules` namespace: cron schedules, declared in code or managed at run time.

Declarative: `@schedules.task(id=..., cron="0 3 * * *", timezone="Europe/Paris")` declares a task
whose schedule exists as soon as the task's code is registered, and follows it across deploys.
Imperative: `schedules.create(task=..., cron=...)` and its siblings, each with an async twin
(`acreate`, ...). A scheduled run's payload is a `ScheduledPayload`; a schedule's runs carry the
tag `schedule:<id>`, so `runs.list(tag=schedule_tag(id))` lists them.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from pydantic import TypeAdapter

from . import _tasks
from ._client import AsyncClient, Client, _parse, _require_id, _validate, default_async_client, default_client
from ._errors import InvalidRequestError
from .wire import (
    CatchUp,
    RetryPolicy,
    Schedule,
    ScheduleCreate,
    ScheduledPayload,
    ScheduleList,
    ScheduleSpec,
    ScheduleType,
    ScheduleUpdate,
)

__all__ = [
    "CatchUp",
    "Schedule",
    "ScheduleList",
    "ScheduleType",
    "ScheduledPayload",
    "aactivate",
    "acreate",
    "activate",
    "adeactivate",
    "adelete",
    "alist",
    "aretrieve",
    "aupdate",
    "create",
    "cron_problem",
    "deactivate",
    "delete",
    "list",
    "retrieve",
    "schedule_tag",
    "task",
    "update",
]

R = TypeVar("R")
_SCHEDULE = TypeAdapter(Schedule)
_SCHEDULE_LIST = TypeAdapter(ScheduleList)
_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week", "second")


def schedule_tag(schedule_id: str) -> str:
    """The tag every run of this schedule carries."""
    return f"schedule:{schedule_id}"


def cron_problem(expression: str) -> str | None:
    """What is wrong with a cron expression, naming the field; None if croniter accepts it.

    Five fields (minute hour day-of-month month day-of-week), or six with seconds last. Needs
    croniter (installed with the runtime); without it, nothing is checked here.
    """
    try:
        from croniter import croniter
    except ImportError:
        return None
    parts = expression.split()
    if not expression.strip().startswith("@") and len(parts) not in (5, 6):
        return (f"cron expression {expression!r} has {len(parts)} fields; expected 5 "
                "(minute hour day-of-month month day-of-week) or 6 (the same, then seconds)")
    if croniter.is_valid(expression):
        return None
    # Try each field alone, the others as "*", to say which one croniter refuses.
    for index, part in enumerate(parts if len(parts) > 1 else []):
        probe = ["*"] * len(parts)
        probe[index] = part
        if not croniter.is_valid(" ".join(probe)):
            return f"invalid {_FIELDS[index]} field {part!r} in cron expression {expression!r}"
    return f"invalid cron expression {expression!r}"


def task(
    *,
    id: str,
    cron: str,
    timezone: str = "UTC",
    catch_up: CatchUp | str = CatchUp.LAST,
    queue: str | dict[str, Any] | None = None,
    retry: dict[str, Any] | RetryPolicy | None = None,
    max_duration: float | None = None,
    machine: str | None = None,
) -> Callable[[Callable[..., R]], _tasks.Task[R]]:
    """Declare a task that runs on a cron schedule; it receives a `ScheduledPayload`.

    `catch_up="last"` (default) fires the most recent tick missed while no runtime was up, once;
    `"skip"` drops missed ticks. A bad expression or time zone raises `InvalidRequestError` here.
    """
    spec = _validate(ScheduleSpec, {"cron": cron, "timezone": timezone, "catch_up": catch_up})
    problem = cron_problem(spec.cron)
    if problem:
        raise InvalidRequestError(problem, field="cron")

    def decorate(fn: Callable[..., R]) -> _tasks.Task[R]:
        declared = _tasks.Task(fn, id=id, queue=queue, retry=retry, max_duration=max_duration, machine=machine,
                               payload_model=ScheduledPayload)
        declared.manifest = declared.manifest.model_copy(update={"schedule": spec})
        _tasks._register(declared)
        return declared

    return decorate


# --- requests: built once here, sent by either twin ---------------------------------------------


def _create(client: Client | AsyncClient, fields: dict[str, Any]) -> httpx.Request:
    body = _validate(ScheduleCreate, {k: v for k, v in fields.items() if v is not None})
    return client._requests.build("POST", "/schedules", body=body)


def _list(client: Client | AsyncClient, task: str | None, external_id: str | None, type: str | None,
          active: bool | None, limit: int, cursor: str | None) -> httpx.Request:
    params: builtins.list[tuple[str, str | int]] = [("limit", limit)]
    for name, value in (("task", task), ("external_id", external_id), ("type", type), ("cursor", cursor)):
        if value is not None:
            params.append((name, str(value)))
    if active is not None:
        params.append(("active", "true" if active else "false"))
    return client._requests.build("GET", "/schedules", params=params)


def _path(schedule_id: str, action: str = "") -> str:
    return f"/schedules/{_require_id(schedule_id, 'schedule_id')}{action}"


def _update(client: Client | AsyncClient, schedule_id: str, fields: dict[str, Any]) -> httpx.Request:
    body = _validate(ScheduleUpdate, {k: v for k, v in fields.items() if v is not None})
    return client._requests.build("PATCH", _path(schedule_id), body=body)


def _sync(client: Client | None) -> Client:
    return client if client is not None else default_client()


def _async(client: AsyncClient | None) -> AsyncClient:
    return client if client is not None else default_async_client()


# --- sync ---------------------------------------------------------------------------------------


def create(task: str, cron: str, *, timezone: str = "UTC", external_id: str | None = None,
           deduplication_key: str | None = None, catch_up: CatchUp | str | None = None, active: bool | None = None,
           client: Client | None = None) -> Schedule:
    """Create a schedule for `task`; with a `deduplication_key` already in use, update that schedule instead."""
    c = _sync(client)
    fields = {"task": task, "cron": cron, "timezone": timezone, "external_id": external_id,
              "deduplication_key": deduplication_key, "catch_up": catch_up, "active": active}
    return _parse(c._send(_create(c, fields)), _SCHEDULE)


def list(*, task: str | None = None, external_id: str | None = None, type: ScheduleType | str | None = None,
         active: bool | None = None, limit: int = 50, cursor: str | None = None,
         client: Client | None = None) -> ScheduleList:
    """One page of schedules, newest first; pass `next_cursor` back as `cursor` for the next."""
    c = _sync(client)
    return _parse(c._send(_list(c, task, external_id, type, active, limit, cursor)), _SCHEDULE_LIST)


def retrieve(schedule_id: str, *, client: Client | None = None) -> Schedule:
    c = _sync(client)
    return _parse(c._send(c._requests.build("GET", _path(schedule_id))), _SCHEDULE)


def update(schedule_id: str, *, task: str | None = None, cron: str | None = None, timezone: str | None = None,
           external_id: str | None = None, catch_up: CatchUp | str | None = None,
           client: Client | None = None) -> Schedule:
    """Change an imperative schedule; arguments left as None keep their value."""
    c = _sync(client)
    fields = {"task": task, "cron": cron, "timezone": timezone, "external_id": external_id, "catch_up": catch_up}
    return _parse(c._send(_update(c, schedule_id, fields)), _SCHEDULE)


def activate(schedule_id: str, *, client: Client | None = None) -> Schedule:
    """Resume firing from the next tick on (ticks while inactive are not caught up)."""
    c = _sync(client)
    return _parse(c._send(c._requests.build("POST", _path(schedule_id, "/activate"))), _SCHEDULE)


def deactivate(schedule_id: str, *, client: Client | None = None) -> Schedule:
    c = _sync(client)
    return _parse(c._send(c._requests.build("POST", _path(schedule_id, "/deactivate"))), _SCHEDULE)


def delete(schedule_id: str, *, client: Client | None = None) -> Schedule:
    """Delete an imperative schedule; returns it as it was."""
    c = _sync(client)
    return _parse(c._send(c._requests.build("DELETE", _path(schedule_id))), _SCHEDULE)


# --- async --------------------------------------------------------------------------------------


async def acreate(task: str, cron: str, *, timezone: str = "UTC", external_id: str | None = None,
                  deduplication_key: str | None = None, catch_up: CatchUp | str | None = None,
                  active: bool | None = None, client: AsyncClient | None = None) -> Schedule:
    """Create a schedule for `task`; with a `deduplication_key` already in use, update that schedule instead."""
    c = _async(client)
    fields = {"task": task, "cron": cron, "timezone": timezone, "external_id": external_id,
              "deduplication_key": deduplication_key, "catch_up": catch_up, "active": active}
    return _parse(await c._send(_create(c, fields)), _SCHEDULE)


async def alist(*, task: str | None = None, external_id: str | None = None, type: ScheduleType | str | None = None,
                active: bool | None = None, limit: int = 50, cursor: str | None = None,
                client: AsyncClient | None = None) -> ScheduleList:
    c = _async(client)
    return _parse(await c._send(_list(c, task, external_id, type, active, limit, cursor)), _SCHEDULE_LIST)


async def aretrieve(schedule_id: str, *, client: AsyncClient | None = None) -> Schedule:
    c = _async(client)
    return _parse(await c._send(c._requests.build("GET", _path(schedule_id))), _SCHEDULE)


async def aupdate(schedule_id: str, *, task: str | None = None, cron: str | None = None,
                  timezone: str | None = None, external_id: str | None = None, catch_up: CatchUp | str | None = None,
                  client: AsyncClient | None = None) -> Schedule:
    c = _async(client)
    fields = {"task": task, "cron": cron, "timezone": timezone, "external_id": external_id, "catch_up": catch_up}
    return _parse(await c._send(_update(c, schedule_id, fields)), _SCHEDULE)


async def aactivate(schedule_id: str, *, client: AsyncClient | None = None) -> Schedule:
    c = _async(client)
    return _parse(await c._send(c._requests.build("POST", _path(schedule_id, "/activate"))), _SCHEDULE)


async def adeactivate(schedule_id: str, *, client: AsyncClient | None = None) -> Schedule:
    c = _async(client)
    return _parse(await c._send(c._requests.build("POST", _path(schedule_id, "/deactivate"))), _SCHEDULE)


async def adelete(schedule_id: str, *, client: AsyncClient | None = None) -> Schedule:
    c = _async(client)
    return _parse(await c._send(c._requests.build("DELETE", _path(schedule_id))), _SCHEDULE)
