"""Draining a node (SIGTERM or SIGINT on `outlast worker`, or `outlast worker drain NODE`, which the
node learns from its heartbeat): hand its executing attempts to other nodes.

The node stops claiming and gives back what it claimed ahead; attempts that end within the grace
end here. Every attempt still executing then is checkpointed where it is, waiting or running (the
task process's reader thread takes the Suspend whatever its main thread is doing, and CRIU freezes
it mid-instruction), and its run goes back to the queue to be restored by any node: same attempt,
same memory, the time it ran here carried in `execution_ms` (its frozen time counts against
nothing). An attempt that cannot be checkpointed (CRIU off, a process outside a PID namespace, a
failed dump) says why on its timeline and is stopped with the node, as before: retried elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence
from typing import Any

from .attempts import Attempts
from .dispatch import Dispatcher

log = logging.getLogger("outlast.supervisor")
# At most this long for the checkpoints of the attempts left after the grace (dumps take turns: a node
# with many attempts gets longer; an orchestrator's own kill timeout may still come first).
CHECKPOINTS_SECONDS = 120.0
CHECKPOINT_SECONDS_EACH = 10.0
POLL_SECONDS = 0.1


async def drain(dispatcher: Dispatcher, claim_loop: asyncio.Task[None], attempts: Attempts, grace: float) -> int:
    """Drain the node; returns how many attempts were left executing here (not handed over: the caller
    stops them with the node)."""
    claim_loop.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await claim_loop
    dispatcher.release_backlog()
    running = dispatcher.running
    log.info("draining: %d attempts executing, %g s of grace for them to end", len(running), grace)
    if running and grace > 0:
        await asyncio.wait(running, timeout=grace)
    handing = [e for e in attempts.executions.values() if not e.parked]
    for execution in handing:
        execution.draining = True
        execution.changed.set()
    deadline = time.monotonic() + max(CHECKPOINTS_SECONDS, CHECKPOINT_SECONDS_EACH * len(handing))
    while (still := [e for e in attempts.executions.values() if e.draining]) and time.monotonic() < deadline:
        for execution in still:  # again: one that was starting (or restoring) meanwhile looks now
            execution.changed.set()
        await asyncio.sleep(POLL_SECONDS)
    left = len(attempts.executions)
    log.info("drained: %d attempts handed over by checkpoint or ended, %d left to stop",
             len(handing) - left if handing else 0, left)
    return left


def stop_signals(stop: asyncio.Event, forced: asyncio.Event) -> None:
    """SIGINT or SIGTERM: the first sets `stop` (the node drains), the next `forced` (it stops at once)."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda: forced.set() if stop.is_set() else stop.set())


async def until_stopped(stop: asyncio.Event, supervisor: Any) -> None:
    """Wait for a signal (`stop`) or for the runtime to ask the node to drain; either sets `stop`."""
    asked = asyncio.create_task(supervisor.leases.drain_requested.wait())
    signalled = asyncio.create_task(stop.wait())
    await asyncio.wait({asked, signalled}, return_when=asyncio.FIRST_COMPLETED)
    for task in (asked, signalled):
        task.cancel()
    if asked.done() and not asked.cancelled():
        log.info("draining: asked by the runtime (outlast worker drain)")
    stop.set()


async def drain_unless_forced(supervisor: Any, grace: float, forced: asyncio.Event) -> None:
    """`supervisor.drain(grace)`, cut short by `forced` (a second signal): what is left is then stopped."""
    draining = asyncio.create_task(supervisor.drain(grace))
    interrupt = asyncio.create_task(forced.wait())
    await asyncio.wait({draining, interrupt}, return_when=asyncio.FIRST_COMPLETED)
    for task in (draining, interrupt):
        task.cancel()
    await asyncio.gather(draining, interrupt, return_exceptions=True)


async def drain_on_shutdown(supervisors: Sequence[Any], grace: float) -> None:
    """The runtime's (`outlast runtime`, `outlast dev`) supervisors drain as it shuts down; the signal
    that stopped it came already, so another one during the drain cuts it short."""
    forced = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread
            loop.add_signal_handler(signum, forced.set)
            handled.append(signum)
    try:
        for supervisor in supervisors:
            await drain_unless_forced(supervisor, grace, forced)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
