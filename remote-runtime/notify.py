"""Wake-ups: the engine says "new work may be claimable" from any thread; waiters are coroutines."""

from __future__ import annotations

import asyncio


class Wakeup:
    """An asyncio event that threads may set; each `wait` returns on the next set or the timeout."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def notify(self) -> None:
        loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return
        try:
            if asyncio.get_running_loop() is loop:
                event.set()
                return
        except RuntimeError:
            pass
        loop.call_soon_threadsafe(event.set)

    async def wait(self, timeout: float) -> bool:
        """True when woken, False on timeout."""
        assert self._event is not None, "bind() the wakeup to the running loop first"
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._event.clear()
