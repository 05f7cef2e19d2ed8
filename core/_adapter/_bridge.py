"""Serve the async endpoints from sync frameworks (Flask, Django) on one background event loop.

A WSGI worker thread hands the coroutine to the loop and waits for its answer; the app's
`AsyncClient` lives on that loop, so its connections are pooled across requests and threads.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

from outlast._trace import current_trace, tracing

__all__ = ["SyncBridge"]

T = TypeVar("T")
_bridges: weakref.WeakSet[SyncBridge] = weakref.WeakSet()


class SyncBridge:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        _bridges.add(self)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="outlast-adapter-loop", daemon=True).start()
                self._loop = loop
            return self._loop

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the bridge's loop and wait for its result (its exception is raised here).

        The calling request's trace id goes along, so runs triggered there carry it too.
        """
        return asyncio.run_coroutine_threadsafe(_traced(coro, current_trace()), self.loop).result()

    def iterate(self, chunks: AsyncIterator[T]) -> Iterator[T]:
        """A sync iterator over an async one; closing it (a client gone) closes the async one."""
        try:
            while True:
                try:
                    yield self.call(chunks.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                self.call(aclose())

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)

    def forget_loop(self) -> None:
        # A forked child (gunicorn worker) has no loop thread: it starts its own on first use.
        self._loop = None
        self._lock = threading.Lock()


async def _traced(coro: Coroutine[Any, Any, T], trace: dict[str, str] | None) -> T:
    with tracing(trace):
        return await coro


def _after_fork() -> None:
    for bridge in list(_bridges):
        bridge.forget_loop()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
