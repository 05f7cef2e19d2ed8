"""Work the supervisor starts and does not await (a process shutdown, an unpark, an answer to a call)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Background:
    """Holds a reference to each such task until it ends, so the event loop cannot drop it."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Until the tasks started so far have ended (their errors are dropped)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
