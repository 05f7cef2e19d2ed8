"""The `tasks` namespace: trigger runs by task id, without importing the task's code.

Each function uses the shared default client unless given `client=`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Unpack

from ._client import AsyncClient, Client, TriggerKwargs, or_default, or_default_async, trigger_options
from ._validation import clean_options, validate
from .wire import BatchHandle, BatchItem, BatchTriggerRequest, RunHandle, TriggerOptions

__all__ = [
    "abatch_trigger", "abatch_trigger_many", "atrigger", "batch_trigger", "batch_trigger_many", "trigger",
]

_ITEM_KEYS = frozenset({"payload", "options"})


def _options(options: Any) -> Any:
    # Mappings are keyword options (None = unset); anything else is left for validation to judge.
    return clean_options(options) if isinstance(options, Mapping) else options


def is_item(item: Any) -> bool:
    """`{"payload": ..., "options": {...}}` is a batch item; anything else is a bare payload."""
    return isinstance(item, Mapping) and "payload" in item and item.keys() <= _ITEM_KEYS


def items_for(task_id: str, items: Sequence[Any]) -> list[BatchItem]:
    raw: list[Any] = []
    for item in items:
        if is_item(item):
            entry = {"task": task_id, "payload": item["payload"]}
            if item.get("options") is not None:
                entry["options"] = _options(item["options"])
            raw.append(entry)
        else:
            raw.append({"task": task_id, "payload": item})
    return validate(BatchTriggerRequest, {"items": raw}).items


def _items_many(items: Sequence[BatchItem | Mapping[str, Any]]) -> list[BatchItem]:
    raw: list[Any] = []
    for item in items:
        if isinstance(item, Mapping) and item.get("options") is not None:
            item = {**item, "options": _options(item["options"])}
        raw.append(item)
    return validate(BatchTriggerRequest, {"items": raw}).items


def trigger(task_id: str, payload: Any = None, *, client: Client | None = None,
            **options: Unpack[TriggerKwargs]) -> RunHandle:
    """Start a run of `task_id` with `payload`; keyword arguments are `trigger_options`."""
    opts: TriggerOptions = trigger_options(**options)
    return or_default(client).trigger(task_id, payload, opts)


def batch_trigger(task_id: str, items: Sequence[Any], *, client: Client | None = None) -> BatchHandle:
    """Start one run of `task_id` per item, in one request.

    An item is a payload, or a dict `{"payload": ..., "options": {...}}` to give that run options.
    A dict whose only keys are "payload" and "options" is always read as the latter, so wrap such
    a payload: `{"payload": {"payload": 1}}`.
    """
    return or_default(client).batch_trigger(items_for(task_id, items))


def batch_trigger_many(
    items: Sequence[BatchItem | Mapping[str, Any]], *, client: Client | None = None
) -> BatchHandle:
    """Start runs of several tasks in one request; each item is a `BatchItem` or a dict with "task",
    "payload" and "options"."""
    return or_default(client).batch_trigger(_items_many(items))


async def atrigger(task_id: str, payload: Any = None, *, client: AsyncClient | None = None,
                   **options: Unpack[TriggerKwargs]) -> RunHandle:
    """Start a run of `task_id` with `payload`; keyword arguments are `trigger_options`."""
    opts: TriggerOptions = trigger_options(**options)
    return await or_default_async(client).trigger(task_id, payload, opts)


async def abatch_trigger(
    task_id: str, items: Sequence[Any], *, client: AsyncClient | None = None
) -> BatchHandle:
    """Start one run of `task_id` per item, in one request (see `batch_trigger`)."""
    return await or_default_async(client).batch_trigger(items_for(task_id, items))


async def abatch_trigger_many(
    items: Sequence[BatchItem | Mapping[str, Any]], *, client: AsyncClient | None = None
) -> BatchHandle:
    """Start runs of several tasks in one request (see `batch_trigger_many`)."""
    return await or_default_async(client).batch_trigger(_items_many(items))
