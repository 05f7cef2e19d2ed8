"""What a route receives to trigger runs: the client, taking a task object or a task id as the first argument."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from outlast import _tasks_api
from outlast._client import AsyncClient, Client, DurationArg
from outlast._offload import Offloader
from outlast._tasks import Task, task_id_of
from outlast.wire import BatchHandle, PublicToken, RunHandle

__all__ = ["AppClient", "AsyncAppClient"]


def _offloadable(task: Task[Any] | str) -> bool:
    # The runtime checks a schema task's payload against its schema, which a reference would fail.
    return not (isinstance(task, Task) and task.payload_model is not None)


def _plain(task: Task[Any] | str, payload: Any) -> Any:
    return task.check_payload(payload) if isinstance(task, Task) else payload


class AppClient:
    """`Client` for sync routes: `client.trigger(process_order, payload, tags=[...])` or `client.trigger("id", ...)`.

    Every other `Client` method (`retrieve_run`, `poll`, `list_runs`, ...) is there too.
    """

    def __init__(self, client: Client, offloader: Offloader | None = None) -> None:
        self.raw = client
        self.offloader = offloader

    def trigger(self, task: Task[Any] | str, payload: Any = None, **options: Any) -> RunHandle:
        if self.offloader is not None and _offloadable(task):
            payload = self.offloader.offload(_plain(task, payload))
            return _tasks_api.trigger(task_id_of(task), payload, client=self.raw, **options)
        if isinstance(task, Task):
            return task.trigger(payload, client=self.raw, **options)
        return _tasks_api.trigger(task, payload, client=self.raw, **options)

    def batch_trigger(self, task: Task[Any] | str, items: Sequence[Any]) -> BatchHandle:
        if isinstance(task, Task):
            return task.batch_trigger(items, client=self.raw)
        return _tasks_api.batch_trigger(task, items, client=self.raw)

    def public_token(self, runs: str | Sequence[str] = (), *, tags: str | Sequence[str] = (),
                     ttl: DurationArg = 900) -> PublicToken:
        """A token for the browser to read these runs through `{prefix}/runs/{id}`; see `create_public_token`."""
        return self.raw.create_public_token(runs, tags=tags, ttl=ttl)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class AsyncAppClient:
    """The async twin of `AppClient`, for `async def` routes."""

    def __init__(self, client: AsyncClient, offloader: Offloader | None = None) -> None:
        self.raw = client
        self.offloader = offloader

    async def trigger(self, task: Task[Any] | str, payload: Any = None, **options: Any) -> RunHandle:
        if self.offloader is not None and _offloadable(task):
            payload = await asyncio.to_thread(self.offloader.offload, _plain(task, payload))
            return await _tasks_api.atrigger(task_id_of(task), payload, client=self.raw, **options)
        if isinstance(task, Task):
            return await task.atrigger(payload, client=self.raw, **options)
        return await _tasks_api.atrigger(task, payload, client=self.raw, **options)

    async def batch_trigger(self, task: Task[Any] | str, items: Sequence[Any]) -> BatchHandle:
        if isinstance(task, Task):
            return await task.abatch_trigger(items, client=self.raw)
        return await _tasks_api.abatch_trigger(task, items, client=self.raw)

    async def public_token(self, runs: str | Sequence[str] = (), *, tags: str | Sequence[str] = (),
                           ttl: DurationArg = 900) -> PublicToken:
        return await self.raw.create_public_token(runs, tags=tags, ttl=ttl)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)
