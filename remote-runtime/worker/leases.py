"""The lease and watchdog loops: renew the leases of held attempts (and learn which waitpoints
completed and which runs to stop), and kill busy task processes that stopped heartbeating."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from ..settings import RuntimeSettings
from .attempts import Attempts
from .backend import WorkerBackend
from .background import Background
from .calls import WaitCalls

log = logging.getLogger("outlast.supervisor")
WAIT_POLL_SECONDS = 0.2  # how often waitpoints awaited in memory are checked


@dataclasses.dataclass(eq=False)
class Leases:
    """The two loops that watch over the attempts held: lease renewal and the heartbeat watchdog."""

    backend: WorkerBackend
    attempts: Attempts
    calls: WaitCalls
    background: Background
    settings: RuntimeSettings
    # Set when the runtime answers that the node was asked to drain (`outlast worker drain`).
    drain_requested: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def renew_loop(self) -> None:
        """Renew the leases of running attempts; stop those the runtime says are over (canceled); hand
        in the waitpoints that completed (checked more often while some task waits in memory). An idle
        node heartbeats too: the runtime knows it, and a drain asked of it is learnt within `interval`."""
        interval = min(1.0, self.settings.lease_seconds / 3)
        last = time.monotonic()
        while True:
            await asyncio.sleep(WAIT_POLL_SECONDS)
            executions = list(self.attempts.executions.values())
            if time.monotonic() - last < interval and not any(e.waiting for e in executions):
                continue
            last = time.monotonic()
            try:
                response = await self.backend.heartbeat([e.leased for e in executions])
            except Exception as exc:
                log.warning("lease renewal failed: %s", exc)
                continue
            if response.drain and not self.drain_requested.is_set():
                log.info("the runtime asks this node to drain")
                self.drain_requested.set()
            if response.completed:
                self.calls.deliver(response.completed)
            for run_id in response.stop:
                self._stop(run_id)

    def _stop(self, run_id: str) -> None:
        if self.attempts.drop_unstarted(run_id):  # canceled before it started
            return
        execution = self.attempts.executions.get(run_id)
        if execution is not None and execution.process is not None and execution.stop_reason is None:
            execution.stop_reason = "run was canceled"
            self.background.start(execution.process.terminate(self.settings.cancel_grace))

    async def watchdog_loop(self) -> None:
        """A busy process that sends nothing for `heartbeat_timeout` seconds is treated as crashed."""
        timeout = self.settings.heartbeat_timeout
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            now = time.monotonic()
            for execution in list(self.attempts.executions.values()):
                process = execution.process
                if process is not None and process.alive and now - process.last_seen > timeout:
                    execution.stop_reason = f"task process sent no heartbeat for {timeout:g}s and was killed"
                    process.kill()
