"""What a route receives to trigger runs: the client, taking a task object or a task id as the first argument."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from outlast import _tasks_api
from outlast._client import AsyncClient, Client, DurationArg
from outlast._tasks import Task
from outlast.wire import BatchHandle, PublicToken, RunHandle

__all__ = ["AppClient", "AsyncAppClient"]


class AppClient:
    """`Client` for sync routes: `client.trigger(process_order, payload, tags=[...])` or `client.trigger("id", ...)`.

    Every other `Client` method (`retrieve_run`, `poll`, `list_runs`, ...) is there too.
    """

    def __init__(self, client: Client) -> None:
        self.raw = client

    def trigger(self, task: Task[Any] | str, payload: Any = None, **options: Any) -> RunHandle:
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

    def __init__(self, client: AsyncClient) -> None:
        self.raw = client

    async def trigger(self, task: Task[Any] | str, payload: Any = None, **options: Any) -> RunHandle:
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
