"""Named streams: a task writes chunks (`streams.append("tokens", chunk)`), anyone reads them in order.

Inside a task:
    streams.append("tokens", "Hello")                  # blocks until the runtime stored it
    await streams.aappend("tokens", "Hello")           # the async twin
    await streams.pipe("tokens", llm_response_stream)  # every chunk of an async iterator, batched
    streams.pipe_sync("tokens", iterator)              # the sync twin
Anywhere with a secret key or a public access token:
    for chunk in streams.read(run_id, "tokens"): ...   # or `async for`; each a StreamChunk

Each append is a call to the supervisor that carries the writer's count of chunks sent so far: a
call the process repeats after being checkpointed and restored is stored once. A chunk or stream
over the runtime's limits raises `StreamLimitError` (docs/realtime.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from collections.abc import AsyncIterable, Iterable
from typing import Any

from . import _context
from ._client import AsyncClient, Client
from ._errors import OutlastError
from ._realtime import Subscription, read_stream
from .wire import Reply, StreamAppend, StreamChunk, StreamWritten

__all__ = ["StreamLimitError", "aappend", "append", "pipe", "pipe_sync", "read"]
PIPE_BATCH = 500  # chunks per call at most, when an iterator produces faster than the runtime stores
PIPE_BATCH_BYTES = 1024 * 1024
REFUSALS = ("StreamRefused", "StreamClosed")


class StreamLimitError(OutlastError):
    """A chunk or a stream is over the runtime's limit, or the run can no longer write streams."""


class _Counters:
    """How many chunks this attempt sent per stream (in process memory: it survives a checkpoint)."""

    def __init__(self) -> None:
        self.attempt: tuple[str, int] | None = None
        self.sent: dict[str, int] = {}
        self.lock = threading.Lock()

    def reserve(self, name: str, count: int) -> int:
        active = _context.active_run()
        if active is None or not hasattr(active.channel, "call"):
            raise OutlastError("streams.append works inside a task run only; read streams with streams.read")
        with self.lock:
            key = (active.context.run_id, active.context.attempt)
            if key != self.attempt:
                self.attempt, self.sent = key, {}
            first = self.sent.get(name, 0)
            self.sent[name] = first + count
            return first


_counters = _Counters()


def _send(name: str, chunks: list[Any]) -> concurrent.futures.Future[Reply]:
    first = _counters.reserve(name, len(chunks))
    channel = _context.active_run().channel  # type: ignore[union-attr] - reserve() checked it
    return channel.call(op="stream", stream=StreamAppend(name=name, first_seq=first, chunks=chunks))


def _written(reply: Reply) -> StreamWritten:
    if not reply.ok:
        error = reply.error
        kind = StreamLimitError if error and error.type in REFUSALS else OutlastError
        raise kind(error.message if error else "the stream write was refused")
    assert reply.stream is not None
    return reply.stream


def append(name: str, chunk: Any) -> StreamWritten:
    """Add one chunk (any JSON value) to the run's stream `name`; returns the stream's totals."""
    return _written(_send(name, [chunk]).result())


async def aappend(name: str, chunk: Any) -> StreamWritten:
    return _written(await asyncio.wrap_future(_send(name, [chunk])))


async def pipe(name: str, chunks: AsyncIterable[Any]) -> StreamWritten | None:
    """Append every chunk of an async iterator, in order, as they come; chunks that arrive while a
    write is under way go together in the next one. Returns the stream's totals (None: no chunks)."""
    pending: list[Any] = []
    more = asyncio.Event()
    done = False
    written: StreamWritten | None = None

    async def flush() -> None:
        nonlocal written
        while True:
            await more.wait()
            more.clear()
            while pending:
                batch = _take_batch(pending)
                written = _written(await asyncio.wrap_future(_send(name, batch)))
            if done:
                return

    flusher = asyncio.create_task(flush())
    try:
        async for chunk in chunks:
            if flusher.done():
                break  # a write failed: its error is raised below
            pending.append(chunk)
            more.set()
    except BaseException:
        flusher.cancel()
        raise
    done = True
    more.set()
    await flusher
    return written


def _take_batch(pending: list[Any]) -> list[Any]:
    """The next chunks to send together: at most PIPE_BATCH of them and about PIPE_BATCH_BYTES (one at least),
    so a write stays well under the control channel's frame and the worker API's body limits."""
    size, count = 0, 0
    for chunk in pending[:PIPE_BATCH]:
        size += len(chunk) if isinstance(chunk, (str, bytes)) else len(json.dumps(chunk, default=str))
        count += 1
        if size >= PIPE_BATCH_BYTES:
            break
    batch = pending[:count]
    del pending[:count]
    return batch


def pipe_sync(name: str, chunks: Iterable[Any]) -> StreamWritten | None:
    """Append every chunk of an iterator, in order (one write per chunk)."""
    written = None
    for chunk in chunks:
        written = append(name, chunk)
    return written


def read(run_id: str, name: str, *, token: str | None = None, after: str | None = None,
         client: Client | AsyncClient | None = None) -> Subscription[StreamChunk]:
    """The chunks of a run's stream in order (`for` or `async for`), live while it runs and after it ended;
    resumable from a chunk's `.cursor` with `after`."""
    return read_stream(run_id, name, token=token, after=after, client=client)
