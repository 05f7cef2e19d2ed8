"""The `schedules` namespace: cron schedules, declared in code or managed at run time.

Declarative: `@schedules.task(id=..., cron="0 3 * * *", timezone="Europe/Paris")` declares a task
whose schedule exists as soon as the task's code is registered, and follows it across deploys.
Imperative: `schedules.create(task=..., cron=...)` and its siblings, each with an async twin
(`acreate`, ...), on `client.schedules` of the given or the default client. A scheduled run's
payload is a `ScheduledPayload`; a schedule's runs carry the tag `schedule:<id>`, so
`runs.list(tag=schedule_tag(id))` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, Unpack

from . import _tasks
from ._client import AsyncClient, Client
from ._client import or_default as _sync
from ._client import or_default_async as _async
from ._errors import InvalidRequestError
from ._schedules_client import ScheduleChanges, ScheduleFilters, ScheduleOptions
from ._validation import validate
from .wire import CatchUp, RetryPolicy, Schedule, ScheduledPayload, ScheduleList, ScheduleSpec, ScheduleType

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
    spec = validate(ScheduleSpec, {"cron": cron, "timezone": timezone, "catch_up": catch_up})
    problem = cron_problem(spec.cron)
    if problem:
        raise InvalidRequestError(problem, field="cron")

    def decorate(fn: Callable[..., R]) -> _tasks.Task[R]:
        declared = _tasks.Task(fn, id=id, queue=queue, retry=retry, max_duration=max_duration, machine=machine,
                               payload_model=ScheduledPayload)
        declared.manifest = declared.manifest.model_copy(update={"schedule": spec})
        _tasks.register(declared)
        return declared

    return decorate


# --- sync: `client.schedules` of the given client, or of the default one -------------------------


def create(task: str, cron: str, *, client: Client | None = None, **options: Unpack[ScheduleOptions]) -> Schedule:
    """Create a schedule for `task` (options: timezone, external_id, deduplication_key, catch_up, active);
    with a `deduplication_key` already in use, update that schedule instead."""
    return _sync(client).schedules.create(task, cron, **options)


def list(*, client: Client | None = None, **filters: Unpack[ScheduleFilters]) -> ScheduleList:
    """One page of schedules, newest first (filters: task, external_id, type, active, limit, cursor);
    pass `next_cursor` back as `cursor` for the next."""
    return _sync(client).schedules.list(**filters)


def retrieve(schedule_id: str, *, client: Client | None = None) -> Schedule:
    return _sync(client).schedules.retrieve(schedule_id)


def update(schedule_id: str, *, client: Client | None = None, **changes: Unpack[ScheduleChanges]) -> Schedule:
    """Change an imperative schedule (task, cron, timezone, external_id, catch_up); None keeps a value."""
    return _sync(client).schedules.update(schedule_id, **changes)


def activate(schedule_id: str, *, client: Client | None = None) -> Schedule:
    """Resume firing from the next tick on (ticks while inactive are not caught up)."""
    return _sync(client).schedules.activate(schedule_id)


def deactivate(schedule_id: str, *, client: Client | None = None) -> Schedule:
    return _sync(client).schedules.deactivate(schedule_id)


def delete(schedule_id: str, *, client: Client | None = None) -> Schedule:
    """Delete an imperative schedule; returns it as it was."""
    return _sync(client).schedules.delete(schedule_id)


# --- async ----------------------------------------------------------------------------------------


async def acreate(task: str, cron: str, *, client: AsyncClient | None = None,
                  **options: Unpack[ScheduleOptions]) -> Schedule:
    return await _async(client).schedules.create(task, cron, **options)


async def alist(*, client: AsyncClient | None = None, **filters: Unpack[ScheduleFilters]) -> ScheduleList:
    return await _async(client).schedules.list(**filters)


async def aretrieve(schedule_id: str, *, client: AsyncClient | None = None) -> Schedule:
    return await _async(client).schedules.retrieve(schedule_id)


async def aupdate(schedule_id: str, *, client: AsyncClient | None = None,
                  **changes: Unpack[ScheduleChanges]) -> Schedule:
    return await _async(client).schedules.update(schedule_id, **changes)


async def aactivate(schedule_id: str, *, client: AsyncClient | None = None) -> Schedule:
    return await _async(client).schedules.activate(schedule_id)


async def adeactivate(schedule_id: str, *, client: AsyncClient | None = None) -> Schedule:
    return await _async(client).schedules.deactivate(schedule_id)


async def adelete(schedule_id: str, *, client: AsyncClient | None = None) -> Schedule:
    return await _async(client).schedules.delete(schedule_id)
