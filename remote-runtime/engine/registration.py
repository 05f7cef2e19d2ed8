"""Registration: a version's task manifests become the environment's tasks and queues."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import sqlalchemy as sa

from outlast.wire import TaskManifest

from ..store import queue
from ..store.schema import environments, tasks
from .context import EngineContext

# Called as hook(connection, env_ids, version, manifests, now) inside the registering transaction
# (the scheduler keeps declarative schedules in step with the registered code this way).
RegisterHook = Callable[[sa.Connection, Sequence[str], str, Sequence[TaskManifest], float], None]


class Registration:
    def __init__(self, context: EngineContext, hooks: Sequence[RegisterHook] = ()) -> None:
        self.context = context
        self.hooks = list(hooks)

    def register(self, env_ids: Iterable[str], version: str, manifests: Sequence[TaskManifest]) -> None:
        db, now = self.context.db, self.context.clock()
        env_ids = list(env_ids)
        with db.begin() as c:
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

    def list(self, env_id: str) -> list[sa.Row]:
        scope = self.context.scope(env_id)
        with scope.connect() as c:
            return c.execute(scope.select(tasks).order_by(tasks.c.id)).all()
