"""Which table events trigger which tasks: `@on_insert("public.orders", task=..., when=...)` or a `Router`.

A route turns one event into one trigger of its task, with the event's idempotency key, so the
webhook receiver and the outbox drainer (which share `Router.plan`) start each run once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from outlast._client import trigger_options
from outlast._tasks import Task, task_id_of
from outlast._validation import clean_options
from outlast.wire import BatchItem

from ._events import REPEAT_WINDOW, EventShapeError, EventType, SupabaseEvent

__all__ = ["Route", "Router", "default_router", "on_delete", "on_insert", "on_update"]

_EVENTS: dict[str, EventType] = {"insert": "INSERT", "update": "UPDATE", "delete": "DELETE"}


def qualified(table: str) -> str:
    """`orders` -> `public.orders`; `billing.invoices` stays as it is."""
    table = table.strip()
    if not table or table.count(".") > 1 or table.startswith(".") or table.endswith("."):
        raise ValueError(f"table must be 'table' or 'schema.table', got {table!r}")
    return table if "." in table else f"public.{table}"


def event_type(name: str) -> EventType:
    try:
        return _EVENTS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"event must be one of insert, update, delete; got {name!r}") from None


@dataclass(frozen=True)
class Route:
    """`table` + `event` -> `task`, for rows that pass `when`.

    `when(record)` (or `when(record, old_record)`) decides per row; the record is the deleted row
    for DELETE. `payload(event)` shapes what the task receives (default: the event as a dict).
    `options` are trigger options (queue, tags, priority, ...); the idempotency key is always the
    event's own. An event that does not name its commit (a dashboard webhook) holds its key only
    for `repeat_window` seconds: after that the same content is a new change, and a new run.
    """

    table: str
    event: EventType
    task: str
    when: Callable[..., bool] | None = None
    payload: Callable[[SupabaseEvent], Any] | None = None
    primary_key: tuple[str, ...] = ("id",)
    options: Mapping[str, Any] = field(default_factory=dict)
    _task: Task[Any] | None = field(default=None, repr=False, compare=False)

    def matches(self, event: SupabaseEvent) -> bool:
        if self.when is None:
            return True
        if _arity(self.when) >= 2:
            return bool(self.when(event.record, event.old_record))
        return bool(self.when(event.row))

    def item(self, event: SupabaseEvent, repeat_window: float = REPEAT_WINDOW) -> BatchItem:
        payload = self.payload(event) if self.payload else event.payload()
        if self._task is not None:
            payload = self._task.check_payload(payload)  # schema tasks validate here, before anything is sent
        options = {**self.options, "idempotency_key": event.idempotency_key(self.primary_key)}
        if not event.identifies_its_commit:
            options["idempotency_key_ttl"] = repeat_window
        return BatchItem(task=self.task, payload=payload, options=trigger_options(**options))


def _arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


class Router:
    """A routing table of table events to tasks.

    Build it with the decorators (`router.on_insert(...)`), with `add`, or from a mapping::

        Router.from_table({"public.orders": {"insert": fulfil_order, "update": [sync_order, audit]}})
    """

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self.routes: list[Route] = list(routes)

    @classmethod
    def from_table(cls, table: Mapping[str, Mapping[str, Task[Any] | str | Iterable[Task[Any] | str]]]) -> Router:
        router = cls()
        for name, events in table.items():
            for event, tasks in events.items():
                for task in [tasks] if isinstance(tasks, Task | str) else tasks:
                    router.add(name, event, task)
        return router

    def add(
        self,
        table: str,
        event: str,
        task: Task[Any] | str,
        *,
        when: Callable[..., bool] | None = None,
        payload: Callable[[SupabaseEvent], Any] | None = None,
        primary_key: str | Iterable[str] = "id",
        **options: Any,
    ) -> Route:
        """Route `event` (insert, update or delete) on `table` to `task`; trigger options are checked now."""
        task_id = task_id_of(task)
        if when is not None and not callable(when):
            raise TypeError(f"when must be a function of the record, got {when!r}")
        options = clean_options(options)
        if "idempotency_key" in options:
            raise ValueError("idempotency_key is set per event by the router; leave it out")
        trigger_options(**options)  # a bad option fails at declaration, not on the first event
        route = Route(
            table=qualified(table), event=event_type(event), task=task_id,
            when=when, payload=payload,
            primary_key=(primary_key,) if isinstance(primary_key, str) else tuple(primary_key),
            options=options, _task=task if isinstance(task, Task) else None,
        )
        self.routes.append(route)
        return route

    def tables(self) -> set[str]:
        return {route.table for route in self.routes}

    def routes_for(self, event: SupabaseEvent) -> list[Route]:
        return [r for r in self.routes if r.table == event.qualified_table and r.event == event.type]

    def plan(self, event: SupabaseEvent, *, repeat_window: float = REPEAT_WINDOW) -> list[BatchItem]:
        """The triggers this event asks for (none when no route matches or every `when` says no).

        `repeat_window`: how long a dashboard webhook's identical delivery counts as a repeat.
        """
        items: list[BatchItem] = []
        for route in self.routes_for(event):
            try:
                matched = route.matches(event)
            except Exception as exc:  # a `when` that cannot read this row: say which route and why
                raise EventShapeError(f"route {route.table} {route.event} -> {route.task}: when() failed on "
                                      f"this row: {type(exc).__name__}: {exc}", field="record") from None
            if matched:
                items.append(route.item(event, repeat_window))
        return items

    # --- decorators --------------------------------------------------------------------------

    def on_insert(self, table: str, *, task: Task[Any] | str | None = None, when: Callable[..., bool] | None = None,
                  **options: Any) -> Any:
        """Trigger `task` for each inserted row of `table`; without `task=`, decorate a task."""
        return self._declare(table, "insert", task, when, options)

    def on_update(self, table: str, *, task: Task[Any] | str | None = None, when: Callable[..., bool] | None = None,
                  **options: Any) -> Any:
        """Trigger `task` for each updated row; `when(record, old_record)` sees both versions."""
        return self._declare(table, "update", task, when, options)

    def on_delete(self, table: str, *, task: Task[Any] | str | None = None, when: Callable[..., bool] | None = None,
                  **options: Any) -> Any:
        """Trigger `task` for each deleted row; `when(record)` sees the deleted row."""
        return self._declare(table, "delete", task, when, options)

    def _declare(self, table: str, event: str, task: Task[Any] | str | None, when: Callable[..., bool] | None,
                 options: dict[str, Any]) -> Any:
        if task is not None:
            return self.add(table, event, task, when=when, **options)

        def decorate(declared: Task[Any]) -> Task[Any]:
            self.add(table, event, declared, when=when, **options)
            return declared

        return decorate


default_router = Router()
"""The router the module-level `on_insert` / `on_update` / `on_delete` fill, and receivers use by default."""

on_insert = default_router.on_insert
on_update = default_router.on_update
on_delete = default_router.on_delete
