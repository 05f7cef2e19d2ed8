"""The run engine: every status transition of a run is one transaction plus a timeline event.

`RunEngine` is the one object the API and the workers hold. It builds its parts around one
`EngineContext` and forwards to them: registration, triggering, reads, run control, the attempt
protocol, timers and waits. Methods are synchronous (SQLAlchemy Core); the API calls them from its
thread pool and the supervisor through `asyncio.to_thread`. Waiting claimers are woken through
`add_listener`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa

from outlast.wire import (
    Assignment,
    BatchItem,
    HeartbeatResponse,
    LeasedAttempt,
    Run,
    RunEvent,
    RunHandle,
    RunList,
    TaskManifest,
    WorkerReport,
)

from ..checkpoint.retention import ImageDeleter
from ..store.db import Database
from .attempts import Attempts
from .bulk import BulkActions
from .context import EngineContext
from .control import RunControl
from .debounce import DebounceUpkeep
from .nodes import Nodes
from .reads import RunReads
from .registration import RegisterHook, Registration
from .timers import Timers
from .triggering import Triggering, VersionManifests
from .unrestored import UnrestoredCheckpoints
from .waits import Waits


class RunEngine:
    def __init__(self, db: Database, *, lease_seconds: float = 30.0, clock: Callable[[], float] = time.time,
                 public_url: str = "http://127.0.0.1:7070", images: ImageDeleter | None = None,
                 version_manifests: VersionManifests | None = None,
                 register_hooks: Sequence[RegisterHook] = ()) -> None:
        """`images` deletes the checkpoint images of runs that will never resume; `version_manifests`
        finds the tasks of a deployed version (for triggers locked to one); `register_hooks` run inside
        the transaction that registers a version's tasks."""
        self.context = EngineContext(db, lease_seconds=lease_seconds, clock=clock)
        self.db = db
        self.clock = clock
        self.registration = Registration(self.context, register_hooks)
        self.triggering = Triggering(self.context, version_manifests)
        self.waits = Waits(self.context, self.triggering, public_url)
        self.reads = RunReads(self.context)
        self.attempts = Attempts(self.context, self.waits)
        images = images or ImageDeleter(None)
        self.timers = Timers(self.context, self.attempts, self.waits, UnrestoredCheckpoints(self.context, images))
        self.control = RunControl(self.context, self.triggering, self.waits, self.timers, images)
        self.bulk = BulkActions(self.context, self.control, self.triggering)
        self.debounce_upkeep = DebounceUpkeep(self.context)
        self.nodes = Nodes(self.context)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """`callback` runs (from any thread) whenever new work may be claimable."""
        self.context.add_listener(callback)

    def wake(self) -> None:
        """Wake waiting claimers: new work may be claimable."""
        self.context.wake()

    # --- tasks -------------------------------------------------------------------------------

    def register_tasks(self, env_ids: Iterable[str], version: str, manifests: Sequence[TaskManifest]) -> None:
        self.registration.register(env_ids, version, manifests)

    def list_tasks(self, env_id: str) -> list[sa.Row]:
        return self.registration.list(env_id)

    # --- triggering and reading --------------------------------------------------------------

    def trigger(self, env_id: str, items: Sequence[BatchItem], *, replayed_from: str | None = None) -> list[RunHandle]:
        """Create one run per item, all or none: any unknown task or invalid payload refuses the batch."""
        return self.triggering.trigger(env_id, items, replayed_from=replayed_from)

    def run_env(self, run_id: str) -> str:
        return self.reads.run_env(run_id)

    def retrieve(self, env_id: str, run_id: str) -> Run:
        return self.reads.retrieve(env_id, run_id)

    def list_runs(self, env_id: str, *, status: Sequence[str] = (), task: Sequence[str] = (),
                  tag: Sequence[str] = (), created_after: datetime | None = None,
                  created_before: datetime | None = None, limit: int = 50, cursor: str | None = None) -> RunList:
        return self.reads.list_runs(env_id, status=status, task=task, tag=tag, created_after=created_after,
                                    created_before=created_before, limit=limit, cursor=cursor)

    def events(self, env_id: str, run_id: str, *, after: int = 0) -> list[RunEvent]:
        return self.reads.events(env_id, run_id, after=after)

    # --- control -----------------------------------------------------------------------------

    def cancel(self, env_id: str, run_id: str) -> Run:
        """Cancel a run that has not finished; a finished run is returned unchanged."""
        return self.control.cancel(env_id, run_id)

    def replay(self, env_id: str, run_id: str) -> RunHandle:
        """A new run of the same task with the same payload and options (no delay, no idempotency key)."""
        return self.control.replay(env_id, run_id)

    def reschedule(self, env_id: str, run_id: str, delay: float | datetime) -> Run:
        return self.control.reschedule(env_id, run_id, delay)

    # --- workers -----------------------------------------------------------------------------

    def claim(self, node_id: str, env_ids: Iterable[str], task_ids: Iterable[str], limit: int,
              versions: Sequence[str] | None = None) -> list[Assignment]:
        """`versions`: the deployed versions the worker runs (None: a working copy, see queue.routed_version)."""
        return self.attempts.claim(node_id, env_ids, task_ids, limit, versions)

    def heartbeat(self, node_id: str, attempts: Sequence[LeasedAttempt], *,
                  env_ids: Iterable[str] | None = None) -> HeartbeatResponse:
        """Extend the leases of live attempts; say which to stop and which in-memory waits completed."""
        return self.attempts.heartbeat(node_id, attempts, env_ids=env_ids)

    def report(self, report: WorkerReport, *, env_ids: Iterable[str] | None = None) -> None:
        """Apply a worker's buffered logs, metadata changes and attempt completions, in that order."""
        self.attempts.report(report, env_ids=env_ids)

    def recover_node(self, node_id: str) -> int:
        """A node restarted: the attempts it was running are gone; end them as crashed (and retry)."""
        return self.attempts.recover_node(node_id)

    # --- time-driven transitions -------------------------------------------------------------

    def tick(self, batch: int = 500) -> None:
        """Promote due delayed runs, expire runs past their TTL, and reclaim attempts whose lease ran out;
        then one chunk of a bulk action, and (once a minute) forget closed debounce windows."""
        self.timers.tick(batch)
        self.bulk.step()
        self.debounce_upkeep.prune()
