"""The worker supervisor: N slots, warm task processes, and the control channel to them.

It claims attempts from its backend, hands each to a warm task process of the version its
`VersionSource` says, relays the process's logs and metadata, and reports the outcome. Every
attempt runs in a task process, never in the supervisor's own process. A process that finished
an attempt normally is reused for the next attempt of the same version.

Waits: a task's `wait.*` calls come in over the same socket. Waitpoints that complete while
the process waits in memory are handed in as they complete. A wait still pending after the
task's `checkpoint_after` seconds suspends the process: checkpointed with CRIU and gone (the
run is WAITING, the slot free), or, where CRIU cannot run, parked alive outside the slots.
A claimed run that carries a checkpoint is restored instead of started.

The supervisor itself only wires its parts together and starts and stops them:

  pool.py         the task processes, the idle ones, the fork servers; `VersionSource`, what code
                  they run (versions.py: a working copy; deploy/supervisor.py: deployed versions)
  attempts.py     the attempts this node holds (`Execution`), queued, running or parked
  connections.py  the control socket and its frames
  dispatch.py     claiming (with prefetch) and starting attempts in free slots
  execution.py    one attempt, from its process to its outcome and deadlines
  calls.py        wait and token calls, and the waitpoints completing meanwhile
  suspension.py   checkpoint or park a waiting process; restore a checkpointed one
  reports.py      the buffer of logs, metadata and completions sent to the backend
  leases.py       lease renewal and the heartbeat watchdog
  drain.py        a stopping node hands its executing attempts over by checkpoint
  processes.py, forkserver.py, pidns.py: spawning and talking to one task process
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..checkpoint.checkpointer import CheckpointSupport
from ..settings import RuntimeSettings
from .attempts import Attempts
from .backend import WorkerBackend
from .background import Background
from .calls import WaitCalls
from .connections import ControlSocket
from .dispatch import Dispatcher
from .drain import drain
from .execution import AttemptRunner
from .isolation import sockets_dir
from .leases import Leases
from .pool import ProcessPool, VersionSource
from .reports import ReportBuffer
from .suspension import Suspension
from .versions import TasksImportFailed

log = logging.getLogger("outlast.supervisor")


class Supervisor:
    def __init__(self, backend: WorkerBackend, code: VersionSource, settings: RuntimeSettings) -> None:
        self.backend = backend
        self.code = code
        self.settings = settings
        # short: AF_UNIX paths max 108 bytes; under isolation in the directory every task namespace binds
        self._socket_dir = Path(tempfile.mkdtemp(prefix="outlast-", dir=sockets_dir(settings.isolation)))
        socket_path = self._socket_dir / "control.sock"
        self.checkpoints = CheckpointSupport()
        self.background = Background()
        self.attempts = Attempts(settings.slots)
        self.reports = ReportBuffer(backend)
        self.pool = ProcessPool(code, settings, socket_path, self.checkpoints, self.background,
                                self.attempts.slot_freed)
        self.suspension = Suspension(self.checkpoints, backend, self.pool, self.attempts)
        self.calls = WaitCalls(backend, self.attempts, self.suspension, self.background)
        self.dispatcher = Dispatcher(backend, self.attempts, AttemptRunner(
            self.pool, self.suspension, self.attempts, self.reports, settings), self.reports, settings)
        self.control = ControlSocket(socket_path, self.pool, self.reports, self.calls, self.background)
        self.leases = Leases(backend, self.attempts, self.calls, self.background, settings)
        self._loops: list[asyncio.Task[None]] = []

    @property
    def checkpoint_problem(self) -> str:
        """Why waits are kept in memory on this node, when they are ("" where they are checkpointed)."""
        return self.checkpoints.problem

    async def start(self, recover_node: Callable[[], object] | None = None,
                    on_import_failure: Callable[[TasksImportFailed], None] | None = None) -> None:
        """Start serving. `recover_node` (the embedded runtime's) writes off the attempts a crashed
        supervisor of this node left: called once the checkpoints it left are committed, before any claim.
        With `on_import_failure` (a dev loop), tasks that do not import are reported to it and the node
        serves nothing until a reload imports them; without, TasksImportFailed ends the start."""
        await self.control.start()
        await self.checkpoints.detect(self.settings)
        if self.checkpoints.checkpointer is None:
            log.warning("waiting runs stay in memory on this node, NOT checkpointed: %s", self.checkpoints.problem)
        await self.suspension.finish_interrupted()
        if recover_node is not None:
            await asyncio.to_thread(recover_node)
        try:
            await self.load_version()
        except TasksImportFailed as exc:
            if on_import_failure is None:
                raise
            on_import_failure(exc)
        self._loops = [asyncio.create_task(coro) for coro in (
            self.dispatcher.run(), self.leases.renew_loop(), self.reports.run(self._busy),
            self.leases.watchdog_loop())]

    async def load_version(self) -> list[str]:
        """Learn the code to serve from the version source (a working copy imports its tasks: on failure
        TasksImportFailed, and the previous version stays)."""
        return await self.code.load(self.pool)

    async def drain(self, grace: float) -> None:
        """Stop claiming, let attempts end within `grace`, hand the others over by checkpoint (drain.py).
        Then call `stop`, which ends what could not be handed over."""
        if self._loops:
            await drain(self.dispatcher, self._loops[0], self.attempts, grace)

    async def stop(self) -> None:
        """Release the attempts claimed ahead, stop the running ones, report, and shut every process down."""
        self.pool.stopping = True
        for task in self._loops:
            task.cancel()
        await self.dispatcher.stop()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self.reports.flush()
        await self.pool.close()
        await self.background.wait()
        self.control.close()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    def _busy(self) -> bool:
        return self.attempts.running > 0
