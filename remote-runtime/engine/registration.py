"""Registration: a version's task manifests become the environment's tasks and queues.

A dev worker (`outlast dev --api-url`) whose working copy does not import registers the error instead
(`import_failed`); it is kept per environment and node until that node's next good registration, so
the runtime can say why a task it does not know cannot run (state.py `refuse_unimportable`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import sqlalchemy as sa

from outlast.wire import TaskManifest

from ..store import queue
from ..store.schema import environments, import_failures, tasks, worker_nodes
from .context import EngineContext

# Called as hook(connection, env_ids, version, manifests, now) inside the registering transaction
# (the scheduler keeps declarative schedules in step with the registered code this way).
RegisterHook = Callable[[sa.Connection, Sequence[str], str, Sequence[TaskManifest], float], None]


class Registration:
    def __init__(self, context: EngineContext, hooks: Sequence[RegisterHook] = ()) -> None:
        self.context = context
        self.hooks = list(hooks)

    def register(self, env_ids: Iterable[str], version: str, manifests: Sequence[TaskManifest],
                 node_id: str | None = None) -> None:
        """Make `manifests` the environments' tasks; a node's good registration ends its import failure."""
        db, now = self.context.db, self.context.clock()
        env_ids = list(env_ids)
        with db.begin() as c:
            if node_id is not None:
                c.execute(import_failures.delete().where(import_failures.c.env_id.in_(env_ids),
                                                         import_failures.c.node_id == node_id))
            for env_id in env_ids:
                for manifest in manifests:
                    queue_name = manifest.queue.name if manifest.queue else f"task/{manifest.id}"
                    values = {"version": version, "queue": queue_name, "manifest": manifest.model_dump(mode="json"),
                              "updated_at": now}
                    stmt = queue.upsert(c, tasks).values(env_id=env_id, id=manifest.id, **values)
                    c.execute(stmt.on_conflict_do_update(index_elements=["env_id", "id"], set_=values))
                    queue.declare_queue(c, env_id, queue_name, manifest.queue)
                c.execute(environments.update().where(environments.c.id == env_id).values(current_version=version))
            for hook in self.hooks:
                hook(c, env_ids, version, manifests, now)
        self.context.wake()

    def import_failed(self, env_ids: Iterable[str], node_id: str, error: str) -> None:
        """`node_id`'s working copy does not import: `error` says why (the traceback)."""
        now = self.context.clock()
        with self.context.db.begin() as c:
            for env_id in env_ids:
                stmt = queue.upsert(c, import_failures).values(env_id=env_id, node_id=node_id, error=error,
                                                               failed_at=now)
                c.execute(stmt.on_conflict_do_update(index_elements=["env_id", "node_id"],
                                                     set_={"error": error, "failed_at": now}))

    def import_failure(self, env_id: str, node_id: str | None = None) -> str | None:
        """Why the working copy of `node_id` (None: the environment's latest failing node that is still
        alive) does not import. A node whose heartbeats stopped for longer than the lease is gone (its runs
        are written off too): its failure no longer speaks for the environment."""
        scope = self.context.scope(env_id)
        query = scope.select(import_failures.c.node_id, import_failures.c.error, import_failures.c.failed_at).order_by(
            import_failures.c.failed_at.desc())
        with scope.connect() as c:
            if node_id is not None:
                own = c.execute(query.where(import_failures.c.node_id == node_id)).first()
                return own.error if own else None
            failures = c.execute(query.limit(20)).all()
            seen = dict(c.execute(scope.select(worker_nodes.c.node_id, worker_nodes.c.last_seen_at).where(
                worker_nodes.c.node_id.in_([f.node_id for f in failures]))).all()) if failures else {}
        alive_since = self.context.clock() - self.context.lease_seconds
        # A node not seen yet failed at its first start: it counts until it would have heartbeated.
        return next((f.error for f in failures if seen.get(f.node_id, f.failed_at) >= alive_since), None)

    def list(self, env_id: str) -> list[sa.Row]:
        scope = self.context.scope(env_id)
        with scope.connect() as c:
            return c.execute(scope.select(tasks).order_by(tasks.c.id)).all()
