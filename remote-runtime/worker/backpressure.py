"""Back-pressure: a node claims no new attempts while its checkpoints lag behind or its memory runs low.

Every waiting process stays in memory until criu has dumped it. When runs start waiting faster than
the node's criu turns can dump them, each new claim would add one more process to that queue; so
while more than OUTLAST_MAX_QUEUED_CHECKPOINTS processes wait for a turn, or while the kernel
reports less than OUTLAST_MIN_AVAILABLE_MB of available memory, the claim loop waits. Attempts it
already holds go on; the queued runs stay in the database, where another node may claim them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from ..checkpoint.checkpointer import CheckpointSupport
from ..settings import env_whole_number

log = logging.getLogger("outlast.supervisor")
RECHECK_SECONDS = 0.1  # how often a held claim loop looks again (memory frees without telling anyone)
MEMINFO = Path("/proc/meminfo")


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (what can be allocated without swapping); None where unknown."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclasses.dataclass(eq=False)
class ClaimGate:
    """Says whether the claim loop may claim now; logs when it starts and stops holding claims."""

    checkpoints: CheckpointSupport
    max_queued: int = dataclasses.field(default_factory=lambda: env_whole_number("OUTLAST_MAX_QUEUED_CHECKPOINTS", 0))
    min_available: int = dataclasses.field(
        default_factory=lambda: env_whole_number("OUTLAST_MIN_AVAILABLE_MB", 256) * 1_000_000)
    held_since: float | None = None
    held_times: int = 0  # how often claims were held (for tests and logs)
    _last_reason: str = ""

    def queue_limit(self) -> int:
        """0 in the setting: twice the node's criu turns (enough to keep each turn busy)."""
        if self.max_queued:
            return self.max_queued
        checkpointer = self.checkpoints.checkpointer
        return 2 * (checkpointer.concurrency if checkpointer is not None else 1)

    def reason(self, holds_attempts: bool = True) -> str:
        """Why claims wait now, or "" when they may go on. Low memory holds claims only while the node
        `holds_attempts`: a node with nothing of its own to finish could never get out of it."""
        queued = self.checkpoints.queued
        if self.checkpoints.checkpointer is not None and queued > self.queue_limit():
            return f"{queued} processes wait for their checkpoint (more than {self.queue_limit()})"
        if self.min_available and holds_attempts:
            available = available_memory_bytes()
            if available is not None and available < self.min_available:
                return (f"only {available / 1e6:.0f} MB of memory available "
                        f"(claims wait below {self.min_available / 1e6:.0f} MB)")
        return ""

    def holding(self, holds_attempts: bool = True) -> bool:
        """Whether to hold claims now; says so in the log when that changes."""
        reason = self.reason(holds_attempts)
        if reason and not self._last_reason:
            self.held_since, self.held_times = time.monotonic(), self.held_times + 1
            log.warning("claims wait: %s", reason)
        elif not reason and self._last_reason:
            log.info("claims go on after %.1f s", time.monotonic() - (self.held_since or time.monotonic()))
            self.held_since = None
        self._last_reason = reason
        return bool(reason)
