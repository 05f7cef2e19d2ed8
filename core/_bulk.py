"""`client.bulk`: cancel or replay every run matching a filter, as a job the runtime works through.

`client.bulk.cancel(status="QUEUED", task="email")` returns at once with the job (`BulkAction`: its
id, `total` runs matched, `processed` so far); `client.bulk.poll(job.id)` waits until it is done.
The calls are built once, by `_BulkCalls` on the client's `RequestBuilder`; `Bulk` and `AsyncBulk` send them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypedDict, Unpack

from pydantic import TypeAdapter

from ._polling import poll_until, poll_until_async
from ._requests import ApiCall, AsyncSender, RequestBuilder, Sender
from ._validation import require_id, validate
from .wire import BulkAction, BulkActionCreate, BulkActionKind, BulkFilter, RunStatus

__all__ = ["AsyncBulk", "Bulk", "BulkCriteria"]

_BULK_ACTION = TypeAdapter(BulkAction)


class BulkCriteria(TypedDict, total=False):
    """Which runs: those matching every criterion given (a list matches any of its values; tags: any)."""

    status: str | RunStatus | Sequence[str | RunStatus]
    task: str | Sequence[str]
    tag: str | Sequence[str]
    version: str
    created_after: datetime | str
    created_before: datetime | str


Where = BulkFilter | Mapping[str, Any] | None  # a filter as a whole, or none (then keyword criteria)


def _filter(where: Where, criteria: Mapping[str, Any]) -> dict[str, Any]:
    fields = dict(where.model_dump(exclude_defaults=True) if isinstance(where, BulkFilter) else where or {})
    fields.update({name: value for name, value in criteria.items() if value is not None})
    status = fields.get("status")
    if status is not None:  # statuses in any case, as `list_runs` takes them
        statuses = [status] if isinstance(status, str) else list(status)
        fields["status"] = [s if isinstance(s, RunStatus) else str(s).strip().upper() for s in statuses]
    return fields


class _BulkCalls:
    def __init__(self, requests: RequestBuilder) -> None:
        self.requests = requests

    def create(self, action: BulkActionKind, where: Where, criteria: Mapping[str, Any]) -> ApiCall[BulkAction]:
        body = validate(BulkActionCreate, {"action": action, "filter": _filter(where, criteria)})
        return self.requests.call("POST", "/bulk-actions", _BULK_ACTION, body=body)

    def retrieve(self, job_id: str) -> ApiCall[BulkAction]:
        return self.requests.call("GET", f"/bulk-actions/{require_id(job_id, 'bulk_action_id')}", _BULK_ACTION)


def _is_done(job: BulkAction) -> bool:
    return job.is_done


def _still(job: BulkAction) -> str:
    return f"bulk action {job.id} is still {job.state.value} ({job.processed}/{job.total})"


class Bulk:
    """`client.bulk.cancel(...)`, `.replay(...)`, `.retrieve(id)`, `.poll(id)`."""

    def __init__(self, client: Sender) -> None:
        self._client = client
        self._calls = _BulkCalls(client.requests)

    def cancel(self, where: Where = None, **criteria: Unpack[BulkCriteria]) -> BulkAction:
        """Cancel every run of this environment matching the filter now (finished ones are skipped)."""
        return self._client.execute(self._calls.create(BulkActionKind.CANCEL, where, criteria))

    def replay(self, where: Where = None, **criteria: Unpack[BulkCriteria]) -> BulkAction:
        """Start one new run (same task, payload and options) for every run matching the filter now."""
        return self._client.execute(self._calls.create(BulkActionKind.REPLAY, where, criteria))

    def retrieve(self, job_id: str) -> BulkAction:
        return self._client.execute(self._calls.retrieve(job_id))

    def poll(self, job_id: str, *, interval: float = 0.5, timeout: float | None = None) -> BulkAction:
        """Retrieve the job every `interval` seconds until it is COMPLETED; `TimeoutError` after `timeout`."""
        return poll_until(lambda: self.retrieve(job_id), _is_done, _still, interval=interval, timeout=timeout)


class AsyncBulk:
    """The async twin: `await client.bulk.cancel(...)`."""

    def __init__(self, client: AsyncSender) -> None:
        self._client = client
        self._calls = _BulkCalls(client.requests)

    async def cancel(self, where: Where = None, **criteria: Unpack[BulkCriteria]) -> BulkAction:
        return await self._client.execute(self._calls.create(BulkActionKind.CANCEL, where, criteria))

    async def replay(self, where: Where = None, **criteria: Unpack[BulkCriteria]) -> BulkAction:
        return await self._client.execute(self._calls.create(BulkActionKind.REPLAY, where, criteria))

    async def retrieve(self, job_id: str) -> BulkAction:
        return await self._client.execute(self._calls.retrieve(job_id))

    async def poll(self, job_id: str, *, interval: float = 0.5, timeout: float | None = None) -> BulkAction:
        return await poll_until_async(lambda: self.retrieve(job_id), _is_done, _still, interval=interval,
                                      timeout=timeout)
