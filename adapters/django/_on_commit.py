"""Trigger after the surrounding database transaction commits, and never if it rolls back.

A view that saves an order and triggers its fulfilment must not start a run for an order that
was never saved, nor one that reads the row before it is visible: `transaction.on_commit` sends
the trigger once the data is there. Options and payload are checked at once, so a mistake fails
inside the view, not after the commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from outlast._client import trigger_options
from outlast._tasks import Task, jsonable, task_id_of
from outlast.wire import BatchHandle, RunHandle

from .conf import endpoints

__all__ = ["PendingBatch", "PendingRun", "batch_trigger_on_commit", "trigger_on_commit"]


@dataclass
class PendingRun:
    """A trigger waiting for the commit; `handle` is set once it has been sent."""

    task: str
    handle: RunHandle | None = None

    @property
    def id(self) -> str | None:
        return self.handle.id if self.handle else None


@dataclass
class PendingBatch:
    task: str
    handle: BatchHandle | None = None


def trigger_on_commit(task: Task[Any] | str, payload: Any = None, *, using: str | None = None,
                      robust: bool = False, **options: Any) -> PendingRun:
    """Trigger `task` (a Task or a task id) once the transaction of `using` commits.

    Outside a transaction (autocommit) it triggers at once. `robust=True` logs a failed trigger
    instead of raising it from the commit (Django's `on_commit(robust=...)`).
    """
    task_id, body = _checked(task, payload)
    opts = trigger_options(**options)
    pending = PendingRun(task_id)

    def send() -> None:
        pending.handle = endpoints().client().trigger(task_id, body, opts)

    transaction.on_commit(send, using=using, robust=robust)
    return pending


def batch_trigger_on_commit(task: Task[Any] | str, items: Sequence[Any], *, using: str | None = None,
                            robust: bool = False) -> PendingBatch:
    """`batch_trigger` once the transaction commits; items as for `Task.batch_trigger`."""
    from outlast._tasks_api import items_for

    checked = task.batch_items(items) if isinstance(task, Task) else items_for(task, items)
    pending = PendingBatch(checked[0].task if checked else task_id_of(task))

    def send() -> None:
        if checked:
            pending.handle = endpoints().client().batch_trigger(checked)

    transaction.on_commit(send, using=using, robust=robust)
    return pending


def _checked(task: Task[Any] | str, payload: Any) -> tuple[str, Any]:
    if isinstance(task, Task):
        return task.id, task.check_payload(payload)
    return task_id_of(task), jsonable(payload)
