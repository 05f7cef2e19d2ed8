"""Claim and dispatch: claim attempts from the backend (a few ahead while attempts are short) and
start each one in a free slot."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

from outlast.wire import AttemptCompletion, AttemptOutcome

from ..settings import RuntimeSettings
from .attempts import Attempts
from .backend import WorkerBackend
from .backpressure import RECHECK_SECONDS, ClaimGate
from .execution import AttemptRunner
from .reports import ReportBuffer

log = logging.getLogger("outlast.supervisor")
PREFETCH_MULTIPLIER = 4
PREFETCH_BELOW_SECONDS = 0.05
CLAIM_RETRY_SECONDS = 1.0


@dataclasses.dataclass(eq=False)
class Dispatcher:
    """The claim loop, and the attempts it started that are still running."""

    backend: WorkerBackend
    attempts: Attempts
    runner: AttemptRunner
    reports: ReportBuffer
    settings: RuntimeSettings
    _running: set[asyncio.Task[None]] = dataclasses.field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self.gate = ClaimGate(self.runner.suspension.checkpoints)

    def prefetch_limit(self) -> int:
        """How many attempts to hold at once. Like Celery's prefetch, claiming a few ahead spreads one
        claim transaction over several runs; only done while attempts are short, so a node never sits
        on long runs that another node could start now."""
        recent = self.attempts.recent_seconds
        short = recent is not None and recent < PREFETCH_BELOW_SECONDS
        return self.attempts.slots * PREFETCH_MULTIPLIER if short else self.attempts.slots

    async def run(self) -> None:
        attempts, slot_freed = self.attempts, self.attempts.slot_freed
        while True:
            slot_freed.clear()  # before looking at the slots, so no wake-up between is lost
            self._start_backlog()
            # Slots are counted in machine presets (a micro takes half of one); parked waits hold none.
            in_use = int(attempts.slots_in_use)
            capacity = self.prefetch_limit() - in_use - len(attempts.backlog)
            # With every slot busy, top the backlog up only once it runs low, so that each claim
            # takes several runs at once.
            if capacity <= 0 or len(attempts.backlog) >= attempts.slots:
                await slot_freed.wait()
                continue
            if self.gate.holding(bool(attempts.executions)):  # dumps lag behind or memory runs low: no new processes
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(slot_freed.wait(), RECHECK_SECONDS)
                continue
            busy = in_use >= attempts.slots or bool(attempts.backlog)
            try:
                # With a slot idle, long-poll for new work; with all busy, only top up the backlog.
                assignments = await self.backend.claim(capacity, wait=0 if busy else self.settings.poll_interval)
            except Exception as exc:  # the runtime may be restarting; keep trying
                log.warning("claim failed: %s", exc)
                await asyncio.sleep(CLAIM_RETRY_SECONDS)
                continue
            for assignment in assignments:
                attempts.claimed(assignment)
            if busy and not assignments:
                await slot_freed.wait()

    def _start_backlog(self) -> None:
        while (execution := self.attempts.next_to_start()) is not None:
            task = asyncio.create_task(self.runner.execute(execution))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    @property
    def running(self) -> set[asyncio.Task[None]]:
        """The attempts it started that have not ended yet."""
        return set(self._running)

    def release_backlog(self) -> None:
        """Give back the attempts claimed ahead and never started (another node takes them)."""
        for execution in self.attempts.take_backlog():
            self.reports.complete(AttemptCompletion(
                run_id=execution.context.run_id, attempt=execution.context.attempt,
                outcome=AttemptOutcome.RELEASED), now=False)

    async def stop(self) -> None:
        """Give back the attempts claimed ahead and never started, and stop the running ones (each
        reports how it ended). Call once the claim loop is cancelled."""
        self.release_backlog()
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
