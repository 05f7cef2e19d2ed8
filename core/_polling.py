"""Waiting for something the runtime works on (a run, a bulk action): retrieve it every `interval` until done."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["poll_until", "poll_until_async"]

T = TypeVar("T")


class _Waiting:
    """The pauses between retrieves, and `TimeoutError` (saying what is still in which state) past `timeout`."""

    def __init__(self, interval: float, timeout: float | None, describe: Callable[[T], str]) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        self.interval, self.timeout, self.describe = interval, timeout, describe
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def pause(self, latest: T) -> float:
        if self.deadline is None:
            return self.interval
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{self.describe(latest)} after waiting {self.timeout:g}s")
        return min(self.interval, remaining)


def poll_until(fetch: Callable[[], T], done: Callable[[T], bool], describe: Callable[[T], str], *,
               interval: float, timeout: float | None) -> T:
    """`fetch()` until `done` says so; `describe(latest)` words the timeout ("run x is still QUEUED")."""
    waiting = _Waiting(interval, timeout, describe)
    while not done(latest := fetch()):
        time.sleep(waiting.pause(latest))
    return latest


async def poll_until_async(fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool],
                           describe: Callable[[T], str], *, interval: float, timeout: float | None) -> T:
    """The async twin of `poll_until`."""
    waiting = _Waiting(interval, timeout, describe)
    while not done(latest := await fetch()):
        await asyncio.sleep(waiting.pause(latest))
    return latest
