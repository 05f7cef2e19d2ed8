"""An endless proxied stream that lets its server stop: relayed chunks end at SIGTERM/SIGINT.

uvicorn (and the servers like it) waits for open responses before it stops, and a proxied SSE
stream ends only when the runtime ends it. Each relayed stream is read by a task of its own into a
small queue; at the host's shutdown signal every open one is ended: what was not sent yet is dropped
(the browser reconnects with the Last-Event-ID of what it got, to this app restarted or another)
and the runtime's response is closed. Optionally a keep-alive comment goes out after every
KEEPALIVE_SECONDS without a chunk (a proxy that parses the runtime's events does not see its comments).

The signal is caught where the stream's loop runs on the main thread (uvicorn, hypercorn); the
loop of a WSGI bridge runs on a thread of its own, where no signal arrives (see README, Realtime).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from .._shutdown_signals import call_at_shutdown_signal

__all__ = ["KEEPALIVE_SECONDS", "relayed"]

KEEPALIVE_SECONDS = 15.0
KEEPALIVE = b": keep-alive\n\n"
QUEUE_CHUNKS = 64  # read ahead of a slow browser at most this much
_END = object()
_open: set[_Relay] = set()
_watched: set[asyncio.AbstractEventLoop] = set()


class _Relay:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[object] = asyncio.Queue(QUEUE_CHUNKS)

    def end(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(_END)

    async def pump(self, source: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in source:
                await self.queue.put(chunk)
            await self.queue.put(_END)
        except Exception as exc:  # raised in the response, as the source would have
            await self.queue.put(exc)


def _end_all() -> None:
    for relay in list(_open):
        relay.loop.call_soon_threadsafe(relay.end)


async def relayed(source: AsyncIterator[bytes], *, keepalive: bool) -> AsyncIterator[bytes]:
    """`source`'s chunks until it ends or the host server is told to stop."""
    relay = _Relay()
    if relay.loop not in _watched and call_at_shutdown_signal(_end_all):
        _watched.add(relay.loop)
    _open.add(relay)
    reader = asyncio.create_task(relay.pump(source))
    try:
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_SECONDS if keepalive else None):
                    item = await relay.queue.get()
            except TimeoutError:
                yield KEEPALIVE
                continue
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield item  # type: ignore[misc]
    finally:
        _open.discard(relay)
        reader.cancel()  # closes the runtime's response (the source's own finally)
        with contextlib.suppress(asyncio.CancelledError):
            await reader
