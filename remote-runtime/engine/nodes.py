"""Worker nodes as their heartbeats show them, and the drain asked of one (`outlast worker drain`).

A node is known per environment it serves, from its first heartbeat on (an idle node heartbeats too).
A drain request waits in the node's row until its next heartbeat answers `drain`; it belongs to the
node process that was current when it was asked (its incarnation), so a node started again under the
same id after draining serves normally.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from outlast.wire import WorkerNode

from ..errors import EngineError
from ..store.queue import upsert
from ..store.schema import runs, worker_nodes
from .attempts import HELD
from .context import EngineContext, utc


class NodeNotFound(EngineError):
    status_code = 404
    code = "node_not_found"


class Nodes:
    def __init__(self, context: EngineContext) -> None:
        self.context = context

    def seen(self, node_id: str, incarnation: str, env_ids: Iterable[str]) -> bool:
        """Record a heartbeat of `node_id`'s process `incarnation`; whether a drain was asked of it."""
        now, env_ids = self.context.clock(), list(env_ids)
        with self.context.db.begin() as c:
            for env_id in env_ids:
                stmt = upsert(c, worker_nodes).values(env_id=env_id, node_id=node_id, incarnation=incarnation,
                                                      last_seen_at=now)
                same = worker_nodes.c.incarnation == stmt.excluded.incarnation
                c.execute(stmt.on_conflict_do_update(index_elements=["env_id", "node_id"], set_={
                    "incarnation": stmt.excluded.incarnation, "last_seen_at": now,
                    # a new process of the node: what was asked of the one before is not its own
                    "drain_requested_at": sa.case((same, worker_nodes.c.drain_requested_at), else_=None)}))
            return c.execute(sa.select(sa.func.count()).select_from(worker_nodes).where(
                worker_nodes.c.node_id == node_id, worker_nodes.c.env_id.in_(env_ids),
                worker_nodes.c.drain_requested_at.is_not(None))).scalar_one() > 0

    def get(self, env_id: str, node_id: str) -> WorkerNode:
        scope = self.context.scope(env_id)
        with scope.connect() as c:
            row = c.execute(scope.select(worker_nodes).where(worker_nodes.c.node_id == node_id)).first()
            if row is None:
                known = c.execute(scope.select(worker_nodes.c.node_id)
                                  .order_by(worker_nodes.c.node_id).limit(20)).scalars().all()
                raise NodeNotFound(f"no worker node {node_id!r} has served environment {env_id!r} (known: "
                                   f"{', '.join(known) or 'none'})", field="node_id")
            held = c.execute(scope.where(sa.select(sa.func.count()).select_from(runs).where(
                runs.c.node_id == node_id, runs.c.status.in_(HELD)))).scalar_one()
        asked = row.drain_requested_at
        return WorkerNode(node_id=node_id, last_seen_at=utc(row.last_seen_at), drain_requested_at=utc(asked),
                          draining=asked is not None and row.last_seen_at > asked, attempts=held)

    def request_drain(self, env_id: str, node_id: str) -> WorkerNode:
        """Ask `node_id` to drain at its next heartbeat (404 for a node this environment never saw)."""
        scope = self.context.scope(env_id)
        with scope.begin() as c:
            c.execute(scope.update(worker_nodes).where(
                worker_nodes.c.node_id == node_id,
                worker_nodes.c.drain_requested_at.is_(None)).values(drain_requested_at=self.context.clock()))
        return self.get(env_id, node_id)
