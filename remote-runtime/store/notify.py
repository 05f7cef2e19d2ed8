"""Wake-ups: the engine says "new work may be claimable" from any thread; waiters are coroutines."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

WORK_CHANNEL = "outlast_work"
log = logging.getLogger("outlast.notify")


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


class PostgresListener(threading.Thread):
    """LISTENs for the engine's NOTIFY, so that work triggered through another runtime on the same
    database wakes this one's supervisor at once instead of at its next poll."""

    def __init__(self, url: str, callback: Callable[[], None], *, channel: str = WORK_CHANNEL) -> None:
        super().__init__(name=f"outlast-listen-{channel}", daemon=True)
        self.url = url
        self.channel = channel
        self.callback = callback
        self._stopping = threading.Event()

    def run(self) -> None:
        import psycopg

        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as connection:
                    connection.execute(f"LISTEN {self.channel}")
                    while not self._stopping.is_set():
                        for _ in connection.notifies(timeout=1.0):
                            self.callback()
            except psycopg.Error as exc:  # the database restarts: polling covers the gap
                log.warning("LISTEN connection lost (%s); reconnecting", exc)
                self._stopping.wait(1.0)

    def stop(self) -> None:
        self._stopping.set()
