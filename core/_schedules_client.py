"""`client.schedules`: the schedules API as a namespace of `Client` (`Schedules`) and `AsyncClient`.

The calls are built once, by `_ScheduleCalls` on the client's `RequestBuilder`; the twins send them.
The module-level `outlast.schedules.create(...)` and friends use these namespaces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict, Unpack

from pydantic import TypeAdapter

from ._requests import ApiCall, AsyncSender, Params, RequestBuilder, Sender
from ._validation import require_id, validate
from .wire import CatchUp, Schedule, ScheduleCreate, ScheduleList, ScheduleType, ScheduleUpdate

__all__ = ["AsyncSchedules", "ScheduleChanges", "ScheduleFilters", "ScheduleOptions", "Schedules"]

_SCHEDULE = TypeAdapter(Schedule)
_SCHEDULE_LIST = TypeAdapter(ScheduleList)


class ScheduleOptions(TypedDict, total=False):
    """Keyword arguments of `create`: `timezone` defaults to UTC; a used `deduplication_key` updates."""

    timezone: str
    external_id: str | None
    deduplication_key: str | None
    catch_up: CatchUp | str | None
    active: bool | None


class ScheduleChanges(TypedDict, total=False):
    """Keyword arguments of `update`; those left out (or None) keep their value."""

    task: str | None
    cron: str | None
    timezone: str | None
    external_id: str | None
    catch_up: CatchUp | str | None


class ScheduleFilters(TypedDict, total=False):
    """Keyword arguments of `list`: `limit` defaults to 50."""

    task: str | None
    external_id: str | None
    type: ScheduleType | str | None
    active: bool | None
    limit: int
    cursor: str | None


def _set(fields: Mapping[str, Any], allowed: type, call: str) -> dict[str, Any]:
    # TypedDict keyword arguments are not checked by Python: an unknown one fails as it would in a signature.
    for name in fields:
        if name not in allowed.__annotations__:
            raise TypeError(f"{call}() got an unexpected keyword argument {name!r}")
    return {name: value for name, value in fields.items() if value is not None}


def _path(schedule_id: str, action: str = "") -> str:
    return f"/schedules/{require_id(schedule_id, 'schedule_id')}{action}"


class _ScheduleCalls:
    """Every schedules request, whichever twin sends it."""

    def __init__(self, requests: RequestBuilder) -> None:
        self.requests = requests

    def create(self, task: str, cron: str, options: ScheduleOptions) -> ApiCall[Schedule]:
        fields = {"task": task, "cron": cron, "timezone": "UTC", **_set(options, ScheduleOptions, "create")}
        return self.requests.call("POST", "/schedules", _SCHEDULE, body=validate(ScheduleCreate, fields))

    def list(self, filters: ScheduleFilters) -> ApiCall[ScheduleList]:
        fields = _set(filters, ScheduleFilters, "list")
        params: Params = [("limit", fields.pop("limit", 50))]
        active = fields.pop("active", None)
        params += [(name, str(fields[name])) for name in ("task", "external_id", "type", "cursor") if name in fields]
        if active is not None:
            params.append(("active", "true" if active else "false"))
        return self.requests.call("GET", "/schedules", _SCHEDULE_LIST, params=params)

    def retrieve(self, schedule_id: str) -> ApiCall[Schedule]:
        return self.requests.call("GET", _path(schedule_id), _SCHEDULE)

    def update(self, schedule_id: str, changes: ScheduleChanges) -> ApiCall[Schedule]:
        body = validate(ScheduleUpdate, _set(changes, ScheduleChanges, "update"))
        return self.requests.call("PATCH", _path(schedule_id), _SCHEDULE, body=body)

    def action(self, method: str, schedule_id: str, action: str = "") -> ApiCall[Schedule]:
        return self.requests.call(method, _path(schedule_id, action), _SCHEDULE)


class Schedules:
    """`client.schedules.create(task, cron)`, `.list()`, `.retrieve(id)`, `.update(id, cron=...)`, ..."""

    def __init__(self, client: Sender) -> None:
        self._client = client
        self._calls = _ScheduleCalls(client.requests)

    def create(self, task: str, cron: str, **options: Unpack[ScheduleOptions]) -> Schedule:
        """Create a schedule for `task`; with a `deduplication_key` already in use, update that schedule instead."""
        return self._client.execute(self._calls.create(task, cron, options))

    def list(self, **filters: Unpack[ScheduleFilters]) -> ScheduleList:
        """One page of schedules, newest first; pass `next_cursor` back as `cursor` for the next."""
        return self._client.execute(self._calls.list(filters))

    def retrieve(self, schedule_id: str) -> Schedule:
        return self._client.execute(self._calls.retrieve(schedule_id))

    def update(self, schedule_id: str, **changes: Unpack[ScheduleChanges]) -> Schedule:
        """Change an imperative schedule; arguments left out or None keep their value."""
        return self._client.execute(self._calls.update(schedule_id, changes))

    def activate(self, schedule_id: str) -> Schedule:
        """Resume firing from the next tick on (ticks while inactive are not caught up)."""
        return self._client.execute(self._calls.action("POST", schedule_id, "/activate"))

    def deactivate(self, schedule_id: str) -> Schedule:
        return self._client.execute(self._calls.action("POST", schedule_id, "/deactivate"))

    def delete(self, schedule_id: str) -> Schedule:
        """Delete an imperative schedule; returns it as it was."""
        return self._client.execute(self._calls.action("DELETE", schedule_id))


class AsyncSchedules:
    """The async twin: `await client.schedules.create(task, cron)`."""

    def __init__(self, client: AsyncSender) -> None:
        self._client = client
        self._calls = _ScheduleCalls(client.requests)

    async def create(self, task: str, cron: str, **options: Unpack[ScheduleOptions]) -> Schedule:
        return await self._client.execute(self._calls.create(task, cron, options))

    async def list(self, **filters: Unpack[ScheduleFilters]) -> ScheduleList:
        return await self._client.execute(self._calls.list(filters))

    async def retrieve(self, schedule_id: str) -> Schedule:
        return await self._client.execute(self._calls.retrieve(schedule_id))

    async def update(self, schedule_id: str, **changes: Unpack[ScheduleChanges]) -> Schedule:
        return await self._client.execute(self._calls.update(schedule_id, changes))

    async def activate(self, schedule_id: str) -> Schedule:
        return await self._client.execute(self._calls.action("POST", schedule_id, "/activate"))

    async def deactivate(self, schedule_id: str) -> Schedule:
        return await self._client.execute(self._calls.action("POST", schedule_id, "/deactivate"))

    async def delete(self, schedule_id: str) -> Schedule:
        return await self._client.execute(self._calls.action("DELETE", schedule_id))
