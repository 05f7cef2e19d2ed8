"""Waitpoints: what runs wait for, and the transitions of waiting runs (suspend, resume).

A run waits for waitpoints: a point in time, child runs, tokens. While its process waits in
memory the run stays EXECUTING. Once its supervisor checkpoints the process (or, where CRIU
cannot run, parks it) the run is WAITING and holds no concurrency slot. When every waitpoint
blocking a checkpointed run is complete the run goes back to the queue, flagged `resume`, and
whichever worker claims it restores the image and continues the same attempt.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from outlast.wire import (
    BatchItem,
    CheckpointMode,
    CreateTokenRequest,
    ResumeInfo,
    RunStatus,
    SuspendRequest,
    TaskRunError,
    TokenCall,
    Waitpoint,
    WaitpointKind,
    WaitpointResult,
    WaitpointState,
    WaitRequest,
    WaitToken,
)

from ..errors import Conflict, EngineError
from ..store import queue
from ..store.ids import new_run_id
from ..store.schema import run_checkpoints, run_events, run_waits, runs, waitpoints
from .context import EngineContext, ready_run, slot, timeline_event, utc
from .scope import EnvScope
from .triggering import Triggering
from .unrestored import CLAIMS, count_claims, forget_waits_and_checkpoints

S = RunStatus
K = WaitpointKind
PENDING, COMPLETED = "PENDING", "COMPLETED"


class WaitpointNotFound(EngineError):
    status_code = 404
    code = "waitpoint_not_found"


class FinishedRun(NamedTuple):
    """A run that reached a final status, as `Waits.runs_finished` takes it."""

    id: str
    status: S
    output: Any = None
    error: Any = None


def to_result(row: Any) -> WaitpointResult:
    kind = K(row.kind)
    if kind is K.RUN:
        child = row.output or {}
        error = child.get("error")
        return WaitpointResult(id=row.id, kind=kind, ok=child.get("status") == S.COMPLETED, output=child.get("output"),
                               error=TaskRunError.model_validate(error) if error else None,
                               run_id=row.child_run_id, status=child.get("status"))
    return WaitpointResult(id=row.id, kind=kind, ok=not row.timed_out, output=row.output, timed_out=row.timed_out)


def to_waitpoint(row: Any) -> Waitpoint:
    return Waitpoint(id=row.id, kind=K(row.kind), status=row.status, output=row.output, timed_out=row.timed_out,
                     tags=row.tags or [], child_run_id=row.child_run_id, timeout_at=utc(row.complete_after),
                     created_at=utc(row.created_at), completed_at=utc(row.completed_at))


class Waits:
    """The engine's waitpoint transitions. Shares the engine's store, clock and wake-ups."""

    def __init__(self, context: EngineContext, triggering: Triggering,
                 public_url: str = "http://127.0.0.1:7070") -> None:
        self.context = context
        self.db = context.db
        self.triggering = triggering  # a run wait triggers its child runs
        self.public_url = public_url.rstrip("/")

    # --- a task waits ----------------------------------------------------------------------

    def wait(self, request: WaitRequest) -> list[WaitpointState]:
        """Create (or, for a repeated call, find) the waitpoints of one `wait.*` call and block the run on them."""
        spec, base = request.spec, f"wait:{request.run_id}/{request.attempt}/{request.key}"
        with self.db.connect() as c:
            run = self._executing(c, request.run_id, request.attempt, request.node_id)
        children: list[str] = []
        if spec.kind is K.RUN:
            if not spec.items:
                raise EngineError("a run wait needs at least one item", field="spec.items")
            items = [self._child(item, run, f"{base}/{index}") for index, item in enumerate(spec.items)]
            children = [handle.id for handle in self.triggering.trigger(run.env_id, items)]
        now = self.context.clock()
        with (scope := self.context.scope(run.env_id)).begin() as c:  # the run's own tokens and children only
            if spec.kind is K.TOKEN:
                token = c.execute(scope.select(waitpoints).where(
                    waitpoints.c.id == (spec.token_id or ""), waitpoints.c.kind == K.TOKEN.value)).first()
                if token is None:
                    raise WaitpointNotFound(f"token {spec.token_id!r} not found", field="spec.token_id")
                rows = [token]
            else:
                rows = self._create(c, scope, spec.kind, base, spec.until, children, now)
            self._block(c, request.run_id, [row.id for row in rows])
        return [WaitpointState(id=row.id, result=to_result(row) if row.status == COMPLETED else None) for row in rows]

    def _executing(self, c: sa.Connection, run_id: str, attempt: int, node_id: str) -> Any:
        run = c.execute(sa.select(runs.c.env_id, runs.c.status, runs.c.attempts, runs.c.node_id, runs.c.version,
                                  runs.c.tags).where(runs.c.id == run_id)).first()
        if run is None or run.status != S.EXECUTING or run.attempts != attempt or run.node_id != node_id:
            raise Conflict(f"run {run_id} is not executing attempt {attempt} on {node_id}", field="run_id")
        return run

    @staticmethod
    def _child(item: BatchItem, parent: Any, key: str) -> BatchItem:
        # Children run the parent's code; the key makes a repeated call (after a restore) find them again.
        options = item.options.model_copy(update={
            "idempotency_key": item.options.idempotency_key or key,
            "version": item.options.version or parent.version,
        })
        return item.model_copy(update={"options": options})

    def _create(self, c: sa.Connection, scope: EnvScope, kind: K, base: str, until: datetime | None,
                children: Sequence[str], now: float) -> list[Any]:
        keys = [f"{base}/{i}" for i in range(max(1, len(children)))]
        mine = scope.select(waitpoints).where(waitpoints.c.idempotency_key.in_(keys))
        found = {r.idempotency_key: r for r in c.execute(mine)}
        if len(found) == len(keys):
            return [found[k] for k in keys]
        finished = {}
        if children:  # locked: a child finishing now either sees this waitpoint or is seen finished here
            finished = {r.id: r for r in c.execute(scope.select(runs.c.id, runs.c.status, runs.c.output, runs.c.error)
                                                   .where(runs.c.id.in_(children)).with_for_update())
                        if S(r.status).is_final}
        rows = []
        for index, key in enumerate(keys):
            if key in found:
                continue
            row = {"id": "wp_" + new_run_id(now)[4:], "env_id": scope.env_id, "kind": kind.value, "status": PENDING,
                   "complete_after": None, "child_run_id": None, "output": None, "timed_out": False, "tags": [],
                   "idempotency_key": key, "callback_secret": None, "created_at": now, "completed_at": None}
            if kind is K.DATETIME:
                row["complete_after"] = until.timestamp() if until else now
                if row["complete_after"] <= now:
                    row.update(status=COMPLETED, completed_at=now)
            else:
                child = children[index]
                row["child_run_id"] = child
                if child in finished:
                    row.update(status=COMPLETED, completed_at=now, output=_child_output(finished[child]))
            rows.append(row)
        if rows:
            c.execute(waitpoints.insert(), rows)
        by_key = {r.idempotency_key: r for r in c.execute(mine)}
        return [by_key[key] for key in keys]  # in the order of the items

    @staticmethod
    def _block(c: sa.Connection, run_id: str, waitpoint_ids: Sequence[str]) -> None:
        stmt = queue.upsert(c, run_waits).values([{"run_id": run_id, "waitpoint_id": w} for w in waitpoint_ids])
        c.execute(stmt.on_conflict_do_nothing(index_elements=["run_id", "waitpoint_id"]))

    def completed(self, c: sa.Connection, waitpoint_ids: Sequence[str], *,
                  env_ids: Iterable[str] | None = None) -> list[WaitpointResult]:
        """The results of those of `waitpoint_ids` that are complete (of `env_ids` only, when given)."""
        if not waitpoint_ids:
            return []
        query = sa.select(waitpoints).where(waitpoints.c.id.in_(list(waitpoint_ids)), waitpoints.c.status == COMPLETED)
        rows = c.execute(query if env_ids is None else query.where(waitpoints.c.env_id.in_(list(env_ids)))).all()
        return [to_result(row) for row in rows]

    # --- the process stops waiting in memory ---------------------------------------------------

    def suspend(self, request: SuspendRequest) -> bool:
        """The run's process was checkpointed (or parked): the run is WAITING and frees its slot.

        Returns True when its waitpoints completed meanwhile and it went straight back to the queue.
        """
        now = self.context.clock()
        with self.db.begin() as c:
            row = c.execute(sa.select(runs).where(runs.c.id == request.run_id).with_for_update()).first()
            if (row is None or row.status != S.EXECUTING or row.attempts != request.attempt
                    or row.node_id != request.node_id):
                raise Conflict(f"run {request.run_id} is no longer executing attempt {request.attempt} here",
                               field="run_id")
            queue.release(c, [slot(row)])
            c.execute(run_waits.delete().where(run_waits.c.run_id == row.id,
                                               run_waits.c.waitpoint_id.not_in(request.waiting)))
            c.execute(run_checkpoints.delete().where(run_checkpoints.c.run_id == row.id))
            c.execute(run_checkpoints.insert().values(
                run_id=row.id, attempt=row.attempts, mode=request.mode.value, image_key=request.image_key,
                node_id=request.node_id, detail={**request.detail, "waiting": request.waiting}, created_at=now))
            held = request.mode is CheckpointMode.KEPT_ALIVE  # the process lives on its node, which keeps the lease
            c.execute(runs.update().where(runs.c.id == row.id).values(
                status=S.WAITING.value, updated_at=now, execution_ms=row.execution_ms + request.duration_ms,
                node_id=row.node_id if held else None, lease_expires_at=row.lease_expires_at if held else None))
            c.execute(run_events.insert(), [timeline_event(
                row.id, now, "status", S.WAITING, attempt=row.attempts, message=_suspend_message(request),
                data={"checkpoint": {**request.detail, "mode": request.mode.value}})])
            requeued = not held and self._requeue_ready(c, [row.id], now)
        if requeued:
            self.context.wake()
        return bool(requeued)

    def resume_in_memory(self, node_id: str, run_id: str, attempt: int) -> None:
        """A parked (kept-alive) run's waitpoints completed: it executes again on the same node."""
        now = self.context.clock()
        with self.db.begin() as c:
            row = c.execute(sa.select(runs).where(runs.c.id == run_id).with_for_update()).first()
            if row is None or row.status != S.WAITING or row.attempts != attempt or row.node_id != node_id:
                raise Conflict(f"run {run_id} is not waiting in memory on {node_id}", field="run_id")
            queue.hold(c, [slot(row)])
            c.execute(run_checkpoints.delete().where(run_checkpoints.c.run_id == run_id))
            c.execute(runs.update().where(runs.c.id == run_id).values(
                status=S.EXECUTING.value, updated_at=now, lease_expires_at=now + self.context.lease_seconds))
            c.execute(run_events.insert(), [timeline_event(run_id, now, "status", S.EXECUTING, attempt=attempt,
                                                          message=f"attempt {attempt} resumed in memory")])

    def resume_info(self, c: sa.Connection, run_ids: Sequence[str]) -> dict[str, ResumeInfo]:
        """For runs just claimed to resume: images and the results they wait for (rows stay: see unrestored.py)."""
        rows = c.execute(sa.select(run_checkpoints).where(run_checkpoints.c.run_id.in_(list(run_ids)))).all()
        count_claims(c, rows)
        info = {}
        for row in rows:
            detail = {key: value for key, value in row.detail.items() if key != CLAIMS}
            waiting = detail.pop("waiting", [])
            info[row.run_id] = ResumeInfo(mode=CheckpointMode(row.mode), image_key=row.image_key,
                                          results=self.completed(c, waiting), detail=detail)
        return info

    def drop_checkpoints(self, c: sa.Connection, run_ids: Sequence[str]) -> list[str]:
        """Forget the checkpoints of runs that will never resume; returns the image keys to delete."""
        rows = c.execute(run_checkpoints.delete().where(run_checkpoints.c.run_id.in_(list(run_ids)))
                         .returning(run_checkpoints.c.image_key)).all()
        return [row.image_key for row in rows if row.image_key]

    # --- waitpoints complete -------------------------------------------------------------------

    def runs_finished(self, c: sa.Connection, finished: Sequence[Any], now: float) -> int:
        """Runs reached a final status: complete the waitpoints of parents waiting for them.

        `finished` rows have id, status, output and error. Returns how many waiting runs were re-queued.
        """
        ids = [row.id for row in finished]
        forget_waits_and_checkpoints(c, ids)  # a checkpoint row is kept until the run ends (unrestored.py)
        pending = c.execute(_PENDING_FOR_CHILDREN, {"ids": ids}).all()
        if not pending:
            return 0
        by_id = {row.id: row for row in finished}
        c.execute(_COMPLETE_WAITPOINT, [{"b_id": w.id, "b_output": _child_output(by_id[w.child_run_id]),
                                         "b_timed_out": False, "b_now": now} for w in pending])
        return self._unblock(c, [w.id for w in pending], now)

    def complete_due(self, batch: int = 500) -> int:
        """Complete waitpoints whose time came (datetime waits, token timeouts); re-queue runs they unblock."""
        now = self.context.clock()
        with self.db.connect() as c:
            if c.execute(_ANY_DUE, {"b_now": now}).first() is None:
                return 0  # the usual case: no write transaction
        with self.db.begin() as c:
            due = c.execute(sa.select(waitpoints.c.id, waitpoints.c.kind).where(
                waitpoints.c.status == PENDING, waitpoints.c.complete_after <= now)
                .order_by(waitpoints.c.complete_after).limit(batch).with_for_update(skip_locked=True)).all()
            c.execute(_COMPLETE_WAITPOINT, [{"b_id": w.id, "b_output": None, "b_timed_out": w.kind == K.TOKEN.value,
                                             "b_now": now} for w in due])
            requeued = self._unblock(c, [w.id for w in due], now)
        if requeued:
            self.context.wake()
        return len(due)

    def _unblock(self, c: sa.Connection, waitpoint_ids: Sequence[str], now: float) -> int:
        blocked = c.execute(sa.select(run_waits.c.run_id).distinct().where(
            run_waits.c.waitpoint_id.in_(list(waitpoint_ids)))).scalars().all()
        return self._requeue_ready(c, blocked, now) if blocked else 0

    def _requeue_ready(self, c: sa.Connection, run_ids: Sequence[str], now: float) -> int:
        """Checkpointed WAITING runs among `run_ids` with no pending waitpoint left go back to the queue."""
        still_blocked = sa.select(run_waits.c.run_id).join(
            waitpoints, waitpoints.c.id == run_waits.c.waitpoint_id).where(
            run_waits.c.run_id == runs.c.id, waitpoints.c.status == PENDING)
        ready = c.execute(sa.select(runs).join(run_checkpoints, run_checkpoints.c.run_id == runs.c.id).where(
            runs.c.id.in_(list(run_ids)), runs.c.status == S.WAITING.value,
            run_checkpoints.c.mode == CheckpointMode.CRIU.value, ~sa.exists(still_blocked))
            .with_for_update(of=runs)).all()
        if not ready:
            return 0
        c.execute(runs.update().where(runs.c.id.in_([r.id for r in ready])).values(
            status=S.QUEUED.value, updated_at=now))
        c.execute(run_events.insert(), [timeline_event(r.id, now, "status", S.QUEUED, attempt=r.attempts,
                                                      message="everything it waited for is complete; resuming")
                                        for r in ready])
        self.context.enqueue(c, [ready_run(r, now, resume=True) for r in ready])
        return len(ready)

    # --- tokens ----------------------------------------------------------------------------------

    def create_token(self, env_id: str, request: CreateTokenRequest) -> WaitToken:
        now = self.context.clock()
        key = f"token:{request.idempotency_key}" if request.idempotency_key else None
        timeout = request.timeout
        timeout_at = (timeout.timestamp() if isinstance(timeout, datetime) else now + timeout) if timeout else None
        with (scope := self.context.scope(env_id)).begin() as c:
            if key:
                existing = c.execute(scope.select(waitpoints).where(waitpoints.c.idempotency_key == key)).first()
                if existing is not None:
                    return self._token(existing.id, existing.callback_secret, existing.complete_after,
                                       existing.tags, cached=True)
            row = {"id": "wp_" + new_run_id(now)[4:], "env_id": env_id, "kind": K.TOKEN.value, "status": PENDING,
                   "complete_after": timeout_at, "child_run_id": None, "output": None, "timed_out": False,
                   "tags": request.tags, "idempotency_key": key, "callback_secret": secrets.token_urlsafe(24),
                   "created_at": now, "completed_at": None}
            c.execute(waitpoints.insert().values(row))
        return self._token(row["id"], row["callback_secret"], timeout_at, request.tags)

    def _token(self, token_id: str, secret: str, timeout_at: float | None, tags: list[str] | None,
               cached: bool = False) -> WaitToken:
        url = f"{self.public_url}/api/v1/waitpoints/tokens/{token_id}/callback/{secret}"
        return WaitToken(id=token_id, url=url, timeout_at=utc(timeout_at), tags=tags or [], is_cached=cached)

    def complete_token(self, env_id: str | None, token_id: str, data: Any, *, secret: str | None = None) -> Waitpoint:
        """Complete a token with `data`: by its environment's key, or by the secret of its callback URL.

        Completing a token that is already complete changes nothing and returns it as it is.
        """
        now = self.context.clock()
        if env_id is None:  # by its callback URL, whose secret names the token and so its environment
            with self.db.connect() as c:
                env_id = c.execute(sa.select(waitpoints.c.env_id).where(waitpoints.c.id == token_id)).scalar() or ""
        with (scope := self.context.scope(env_id)).begin() as c:
            token = scope.select(waitpoints).where(waitpoints.c.id == token_id, waitpoints.c.kind == K.TOKEN.value)
            row = c.execute(token.with_for_update()).first()
            if row is None or (secret is not None and not hmac.compare_digest(row.callback_secret or "", secret)):
                raise WaitpointNotFound(f"token {token_id!r} not found", field="token_id")
            requeued = 0
            if row.status == PENDING:
                with scope.following_ids(c):  # the token found above, and the runs it blocked (run_waits)
                    c.execute(_COMPLETE_WAITPOINT, [{"b_id": token_id, "b_output": data, "b_timed_out": False,
                                                     "b_now": now}])
                    requeued = self._unblock(c, [token_id], now)
            row = c.execute(scope.select(waitpoints).where(waitpoints.c.id == token_id)).first()
        if requeued:
            self.context.wake()
        return to_waitpoint(row)

    def token_call(self, env_id: str, call: TokenCall) -> WaitToken | None:
        """A task creates a token (idempotently per call) or completes one, through its supervisor."""
        if call.create is not None:
            key = call.create.idempotency_key or (f"{call.run_id}/{call.key}" if call.key else None)
            return self.create_token(env_id, call.create.model_copy(update={"idempotency_key": key}))
        if call.complete_id is None:
            raise EngineError("a token call creates or completes a token", field="complete_id")
        self.complete_token(env_id, call.complete_id, call.data)
        return None

    def retrieve(self, env_id: str, waitpoint_id: str) -> Waitpoint:
        scope = self.context.scope(env_id)
        with scope.connect() as c:
            row = c.execute(scope.select(waitpoints).where(waitpoints.c.id == waitpoint_id)).first()
        if row is None:
            raise WaitpointNotFound(f"waitpoint {waitpoint_id!r} not found", field="waitpoint_id")
        return to_waitpoint(row)


def _child_output(child: Any) -> dict[str, Any]:
    status = child.status.value if isinstance(child.status, S) else child.status
    return {"status": status, "output": child.output, "error": child.error}


def _suspend_message(request: SuspendRequest) -> str:
    count = len(request.waiting)
    what = f"waiting for {count} waitpoint{'s' if count != 1 else ''}" if count else "its node is draining"
    if request.mode is CheckpointMode.CRIU:
        size = request.detail.get("stored_bytes")
        took = request.detail.get("checkpoint_ms")
        facts = ", ".join(part for part in (
            f"{size / 1e6:.1f} MB stored" if size is not None else "",
            f"{took:.0f} ms" if took is not None else "") if part)
        return f"{what}; checkpointed ({facts}), process stopped" if facts else f"{what}; checkpointed"
    reason = request.detail.get("reason", "checkpointing is off")
    return f"{what}; process kept alive in memory, NOT checkpointed: {reason}"


_ANY_DUE = sa.select(waitpoints.c.id).where(waitpoints.c.status == PENDING,
                                            waitpoints.c.complete_after <= sa.bindparam("b_now")).limit(1)
_COMPLETE_WAITPOINT = waitpoints.update().where(
    waitpoints.c.id == sa.bindparam("b_id"), waitpoints.c.status == PENDING).values(
    status=COMPLETED, output=sa.bindparam("b_output", type_=waitpoints.c.output.type),
    timed_out=sa.bindparam("b_timed_out"), completed_at=sa.bindparam("b_now"))
_PENDING_FOR_CHILDREN = sa.select(waitpoints.c.id, waitpoints.c.child_run_id).where(
    waitpoints.c.child_run_id.in_(sa.bindparam("ids", expanding=True)), waitpoints.c.status == PENDING)
