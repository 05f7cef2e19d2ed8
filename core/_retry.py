"""How long the SDK keeps retrying a call the runtime could not serve (503, lost connection).

Only calls that are safe to repeat are retried: reads, cancel, and triggers with an idempotency
key. Pauses grow from 0.2 s to 2 s (or what Retry-After says, capped by the deadline) until
`retry_for` seconds have passed; then the caller gets `RuntimeUnavailableError`.
"""

from __future__ import annotations

import time

import httpx

FIRST_PAUSE = 0.2
LONGEST_PAUSE = 2.0


class Backoff:
    """The pauses between tries of one call; `next_pause()` is None once the time is up."""

    def __init__(self, retry_for: float) -> None:
        self.deadline = time.monotonic() + retry_for
        self.pause = FIRST_PAUSE

    def next_pause(self, response: httpx.Response | None = None) -> float | None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return None
        pause = self.pause
        retry_after = response.headers.get("retry-after", "") if response is not None else ""
        if retry_after.isdigit():
            pause = float(retry_after)
        self.pause = min(self.pause * 2, LONGEST_PAUSE)
        return min(pause, remaining)
