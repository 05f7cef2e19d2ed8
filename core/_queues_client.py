"""`client.queues`: each queue's concurrency and rate limits and what it holds now (`Queues`, `AsyncQueues`)."""

from __future__ import annotations

from pydantic import TypeAdapter

from ._requests import ApiCall, AsyncSender, RequestBuilder, Sender
from ._validation import require_id
from .wire import Queue

__all__ = ["AsyncQueues", "Queues"]

_QUEUE = TypeAdapter(Queue)
_QUEUES = TypeAdapter(list[Queue])


def _list(requests: RequestBuilder) -> ApiCall[list[Queue]]:
    return requests.call("GET", "/queues", _QUEUES)


def _retrieve(requests: RequestBuilder, name: str) -> ApiCall[Queue]:
    return requests.call("GET", f"/queues/{require_id(name, 'name')}", _QUEUE)


class Queues:
    """`client.queues.list()`, `client.queues.retrieve("task/my-task")`."""

    def __init__(self, client: Sender) -> None:
        self._client = client

    def list(self) -> list[Queue]:
        return self._client.execute(_list(self._client.requests))

    def retrieve(self, name: str) -> Queue:
        """A queue by name: a task's own queue is `task/<task id>`."""
        return self._client.execute(_retrieve(self._client.requests, name))


class AsyncQueues:
    """The async twin: `await client.queues.retrieve(name)`."""

    def __init__(self, client: AsyncSender) -> None:
        self._client = client

    async def list(self) -> list[Queue]:
        return await self._client.execute(_list(self._client.requests))

    async def retrieve(self, name: str) -> Queue:
        return await self._client.execute(_retrieve(self._client.requests, name))
