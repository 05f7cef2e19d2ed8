"""Following the runtime's Server-Sent Events: `runs.subscribe(id)`, `subscribe_to_tag(tag)`, `subscribe_to_batch`.

A `Subscription` is both an iterator and an async iterator. It reads the SSE stream with httpx and
httpx-sse, remembers the id of the last message, and when the connection drops it reconnects with
`Last-Event-ID`, so nothing is lost or repeated (the runtime's cursors, see docs/realtime.md). It
ends at the runtime's `end` event (a run that is final, a stream whose run is final) or `close()`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse

from ._client import AsyncClient, Client
from ._config import ClientSettings, from_env
from ._responses import api_error
from .wire import API_PREFIX, CHUNK_EVENT, END_EVENT, RUN_EVENT, BatchHandle, RunChange, StreamChunk

T = TypeVar("T")
RECONNECT_SECONDS = 0.5
RECONNECT_FOR_SECONDS = 60.0  # give up after this long without a connection
LOST = (httpx.TransportError, httpx.RemoteProtocolError)  # the connection dropped: reconnect


class Subscription(Generic[T]):
    """Messages of one SSE endpoint, in order, across reconnects; `for x in sub` or `async for x in sub`.

    The two iterators are the same loop, one with blocking and one with awaited I/O; what they decide
    (the request, a refusal, each event, whether to reconnect) is in the methods they share.
    """

    def __init__(self, settings: ClientSettings, path: str, convert: Callable[[ServerSentEvent], T | None], *,
                 token: str | None = None, after: str | None = None, params: dict[str, str] | None = None) -> None:
        credential = token or settings.require_secret_key()
        self.url = settings.api_url + API_PREFIX + path
        self.params = params or {}
        self.headers = {"Authorization": f"Bearer {credential}"}
        self.last_event_id = after
        self._convert = convert
        self._closed = False
        self._timeout = httpx.Timeout(settings.timeout, read=None)

    def close(self) -> None:
        self._closed = True

    def _request(self) -> dict[str, Any]:
        extra = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
        return {"params": self.params, "headers": {**self.headers, **extra}}

    def _accept(self, event: ServerSentEvent) -> tuple[bool, T | None]:
        """(ended, item): remembers the event's id before handing it on."""
        if event.id:
            self.last_event_id = event.id
        if event.event == END_EVENT:
            return True, None
        return False, self._convert(event)

    def _give_up_after(self, error: Exception, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise error

    # --- sync ---------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[T]:
        deadline = time.monotonic() + RECONNECT_FOR_SECONDS
        with httpx.Client(timeout=self._timeout) as http:
            while not self._closed:
                try:
                    with connect_sse(http, "GET", self.url, **self._request()) as source:
                        if source.response.status_code != 200:
                            source.response.read()
                            raise api_error(source.response)
                        deadline = time.monotonic() + RECONNECT_FOR_SECONDS
                        for event in source.iter_sse():
                            ended, item = self._accept(event)
                            if ended:
                                return
                            if item is not None:
                                yield item
                            if self._closed:
                                return
                except LOST as exc:
                    self._give_up_after(exc, deadline)
                time.sleep(RECONNECT_SECONDS)

    # --- async --------------------------------------------------------------------------------

    async def __aiter__(self) -> AsyncIterator[T]:
        deadline = time.monotonic() + RECONNECT_FOR_SECONDS
        async with httpx.AsyncClient(timeout=self._timeout) as http:
            while not self._closed:
                try:
                    async with aconnect_sse(http, "GET", self.url, **self._request()) as source:
                        if source.response.status_code != 200:
                            await source.response.aread()
                            raise api_error(source.response)
                        deadline = time.monotonic() + RECONNECT_FOR_SECONDS
                        async for event in source.aiter_sse():
                            ended, item = self._accept(event)
                            if ended:
                                return
                            if item is not None:
                                yield item
                            if self._closed:
                                return
                except LOST as exc:
                    self._give_up_after(exc, deadline)
                await asyncio.sleep(RECONNECT_SECONDS)


def _settings(client: Client | AsyncClient | None) -> ClientSettings:
    return client.settings if client is not None else from_env()


def _run_change(event: ServerSentEvent) -> RunChange | None:
    return RunChange.model_validate_json(event.data) if event.event == RUN_EVENT else None


def _chunk(event: ServerSentEvent) -> StreamChunk | None:
    return StreamChunk.model_validate_json(event.data) if event.event == CHUNK_EVENT else None


def subscribe(run_id: str, *, token: str | None = None, after: str | None = None,
              client: Client | AsyncClient | None = None) -> Subscription[RunChange]:
    """Every change of the run (status, metadata, tags, output), from its first; ends once it is final.

    Each `RunChange` carries the run as it is (`.run`). `token` is a public access token (else the
    client's secret key); `after` a cursor to resume from (a change's `.cursor`).
    """
    return Subscription(_settings(client), f"/runs/{quote(run_id, safe='')}/subscribe", _run_change,
                        token=token, after=after)


def subscribe_to_tag(tag: str, *, token: str | None = None, after: str | None = None,
                     client: Client | AsyncClient | None = None) -> Subscription[RunChange]:
    """Changes of every run with `tag`, from now on (or after the cursor `after`); it never ends by itself."""
    return Subscription(_settings(client), "/runs/subscribe", _run_change, token=token, after=after,
                        params={"tag": tag})


def subscribe_to_batch(batch: BatchHandle | Sequence[str], *, token: str | None = None, after: str | None = None,
                       client: Client | AsyncClient | None = None) -> Subscription[RunChange]:
    """Changes of a batch's runs (a `BatchHandle` or their ids, at most 100), from their first; ends once
    every one of them is final."""
    ids = [handle.id for handle in batch.runs] if isinstance(batch, BatchHandle) else list(batch)
    return Subscription(_settings(client), "/runs/subscribe", _run_change, token=token, after=after,
                        params={"batch": ",".join(ids)})


def read_stream(run_id: str, name: str, *, token: str | None = None, after: str | None = None,
                client: Client | AsyncClient | None = None) -> Subscription[Any]:
    """The chunks of a run's stream `name`, in order, while it runs and after; ends once the run is final."""
    return Subscription(_settings(client), f"/runs/{quote(run_id, safe='')}/streams/{quote(name, safe='')}",
                        _chunk, token=token, after=after)
