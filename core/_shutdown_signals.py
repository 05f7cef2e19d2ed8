"""Run a callback when the server this process runs is told to stop (SIGTERM or SIGINT).

A Server-Sent-Events response never ends by itself, and uvicorn (like most servers) waits for open
responses before it stops: whoever serves endless streams ends them at the signal, and clients
reconnect with Last-Event-ID. The callback is chained before the handler in place (uvicorn's, which
stays and is called after; sse-starlette hooks uvicorn's exit handler for the same reason) and runs
on the calling event loop.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["call_at_shutdown_signal"]


def call_at_shutdown_signal(callback: Callable[[], None]) -> bool:
    """Chain `callback` (run on the running loop) before the SIGTERM/SIGINT handlers; False when it cannot be
    (not on the main thread: signals reach it only, as in a test client's portal or a WSGI bridge's loop)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue  # the default action (the process ends anyway) or ignored

        def handler(number: int, frame: Any, previous: Callable[[int, Any], Any] = previous) -> None:
            loop.call_soon_threadsafe(callback)
            previous(number, frame)
        signal.signal(signum, handler)
    return True
