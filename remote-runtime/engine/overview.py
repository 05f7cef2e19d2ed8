"""Reads the dashboard needs beyond the JSON API's: a run's waits, checkpoints, queues, nodes.

Every read is scoped to one environment and bounded (a limit, a cursor or an index range): no count(*)
over the run history, so the pages stay quick with a million runs in the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from outlast.wire import Waitpoint

from ..store.db import Database
from ..store.schema import queue_keys, queues, run_checkpoints, run_waits, runs, tasks, waitpoints
from .context import utc
from .scope import EnvScope
from .waits import to_waitpoint


@dataclass(frozen=True)
class QueueUse:
    name: str
    limit: int | None
    running: int
    queued: int  # capped at QUEUED_CAP: the count is only read as far as the page shows it


@dataclass(frozen=True)
class NodeUse:
    node_id: str
    executing: int
    waiting: int  # WAITING runs whose attempt this node started


QUEUED_CAP = 1000


class Overview:
    def __init__(self, db: Database) -> None:
        self.db = db

    def run_waitpoints(self, env_id: str, run_id: str) -> list[Waitpoint]:
        """What the run waits for now (its links are removed once it resumes)."""
        scope = EnvScope(self.db, env_id)
        stmt = scope.where(sa.select(waitpoints).join(run_waits, run_waits.c.waitpoint_id == waitpoints.c.id)
                           .where(run_waits.c.run_id == run_id).order_by(waitpoints.c.id))
        with scope.connect() as c:
            return [to_waitpoint(r) for r in c.execute(stmt).all()]

    def pending_tokens(self, env_id: str, *, limit: int = 50, cursor: str | None = None
                       ) -> list[tuple[Waitpoint, list[str]]]:
        """Pending tokens, newest first, each with the runs waiting on it."""
        scope = EnvScope(self.db, env_id)
        stmt = (scope.select(waitpoints).where(waitpoints.c.kind == "token", waitpoints.c.status == "PENDING")
                .order_by(waitpoints.c.id.desc()).limit(limit))
        if cursor:
            stmt = stmt.where(waitpoints.c.id < cursor)
        with scope.connect() as c:
            rows = c.execute(stmt).all()
            waiting: dict[str, list[str]] = {r.id: [] for r in rows}
            if rows:
                for link in c.execute(sa.select(run_waits).where(run_waits.c.waitpoint_id.in_(list(waiting)))):
                    waiting[link.waitpoint_id].append(link.run_id)
        return [(to_waitpoint(r), waiting[r.id]) for r in rows]

    def checkpoint(self, env_id: str, run_id: str) -> dict[str, Any] | None:
        """Where a waiting run's process image is (mode, node, image key, sizes and durations), if it has one."""
        scope = EnvScope(self.db, env_id)
        stmt = scope.where(sa.select(run_checkpoints).join(runs, runs.c.id == run_checkpoints.c.run_id)
                           .where(run_checkpoints.c.run_id == run_id))
        with scope.connect() as c:
            row = c.execute(stmt).first()
        if row is None:
            return None
        return {"attempt": row.attempt, "mode": row.mode, "image_key": row.image_key, "node_id": row.node_id,
                "detail": row.detail or {}, "created_at": utc(row.created_at)}

    def queues(self, env_id: str) -> list[QueueUse]:
        """Every queue of the environment's tasks: its limit, the runs executing and (up to a cap) queued."""
        scope = EnvScope(self.db, env_id)
        with scope.connect() as c:
            names = set(c.execute(scope.select(tasks.c.queue)).scalars())
            limits = dict(c.execute(scope.select(queues.c.name, queues.c.concurrency_limit)).all())
            running = dict(c.execute(scope.select(queue_keys.c.queue, sa.func.sum(queue_keys.c.running))
                                     .group_by(queue_keys.c.queue)).all())
            result = []
            for name in sorted(names | set(limits) | set(running)):
                capped = (scope.select(runs.c.id).where(runs.c.status == "QUEUED", runs.c.queue == name)
                          .limit(QUEUED_CAP).subquery())
                queued = c.execute(sa.select(sa.func.count()).select_from(capped)).scalar_one()
                result.append(QueueUse(name, limits.get(name), int(running.get(name) or 0), queued))
        return result

    def nodes(self, env_id: str) -> list[NodeUse]:
        """The nodes running this environment's attempts now (live runs only: the lease index covers them)."""
        scope = EnvScope(self.db, env_id)
        live = scope.select(runs.c.node_id, runs.c.status, sa.func.count().label("n")).where(
            runs.c.status.in_(("EXECUTING", "WAITING")), runs.c.node_id.is_not(None),
        ).group_by(runs.c.node_id, runs.c.status)
        by_node: dict[str, dict[str, int]] = {}
        with scope.connect() as c:
            for row in c.execute(live):
                by_node.setdefault(row.node_id, {})[row.status] = row.n
        return [NodeUse(node, use.get("EXECUTING", 0), use.get("WAITING", 0)) for node, use in sorted(by_node.items())]

    def recent_checkpoint_failures(self, env_id: str, limit: int = 10) -> list[dict[str, Any]]:
        """Waiting runs kept in memory instead of checkpointed, newest first, with the reason."""
        scope = EnvScope(self.db, env_id)
        stmt = (scope.where(sa.select(run_checkpoints).join(runs, runs.c.id == run_checkpoints.c.run_id)
                            .where(run_checkpoints.c.mode != "criu"))
                .order_by(run_checkpoints.c.created_at.desc()).limit(limit))
        with scope.connect() as c:
            return [{"run_id": r.run_id, "node_id": r.node_id, "reason": (r.detail or {}).get("reason", ""),
                     "created_at": utc(r.created_at)} for r in c.execute(stmt)]
