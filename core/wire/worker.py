"""The worker API (a supervisor, possibly on another node <-> the runtime): claims, leases, waits, reports."""

from __future__ import annotations

import enum
from typing import Annotated, Any

from pydantic import BaseModel, Field

from .values import (
    Attempt,
    Identifier,
    MetadataOp,
    Milliseconds,
    Moment,
    RunContext,
    StrictModel,
    TaskManifest,
    TaskRunError,
)
from .waits import WaitpointResult, WaitSpec

RunId = Annotated[str, Field(min_length=1, max_length=64)]


class CheckpointMode(enum.StrEnum):
    CRIU = "criu"  # the process image is on disk; the process is gone
    KEPT_ALIVE = "kept_alive"  # no checkpointing here: the process waits in memory on its node


class WaitRequest(StrictModel):
    node_id: Identifier
    run_id: RunId
    attempt: Attempt
    key: str = Field(min_length=1, max_length=64, description="unique per call within the attempt")
    spec: WaitSpec


class SuspendRequest(StrictModel):
    node_id: Identifier
    run_id: RunId
    attempt: Attempt
    mode: CheckpointMode
    waiting: list[Annotated[str, Field(max_length=64)]] = Field(description="the waitpoints the task still waits for")
    image_key: str | None = Field(None, max_length=512)
    detail: dict[str, Any] = Field(default_factory=dict)
    duration_ms: Milliseconds = 0


class ResumeRequest(StrictModel):
    node_id: Identifier
    run_id: RunId
    attempt: Attempt


class ResumeInfo(BaseModel):
    mode: CheckpointMode
    image_key: str | None = None
    results: list[WaitpointResult] = Field(default_factory=list)
    detail: dict[str, Any] = Field(default_factory=dict)




class WorkerRegistration(StrictModel):
    node_id: Identifier
    version: str = Field(min_length=1, max_length=64)
    tasks: list[TaskManifest] = Field(max_length=10_000)
    import_error: str | None = Field(
        None, min_length=1, max_length=100_000,
        description="`outlast dev`: the working copy's latest content (`version`) does not import, this says "
                    "why; nothing is registered, and triggers of tasks the environment does not have answer 409 "
                    "`tasks_do_not_import` until the node's next registration without one")


class ClaimRequest(StrictModel):
    node_id: Identifier
    task_ids: list[Identifier] = Field(max_length=10_000, description="the tasks this worker can run")
    versions: list[Annotated[str, Field(max_length=64)]] | None = Field(
        None, max_length=10_000, description="deployed versions it runs; none: working-copy runs only")
    max_runs: int = Field(ge=1, le=1000)
    wait: float = Field(0, ge=0, le=60, description="long-poll up to this many seconds")


class Assignment(BaseModel):
    """One claimed attempt: the context and the payload to run it with (or the checkpoint to resume)."""

    context: RunContext
    payload: Any = None
    execution_ms: int = 0
    resume: ResumeInfo | None = None


class ClaimResponse(BaseModel):
    assignments: list[Assignment]


class LeasedAttempt(StrictModel):
    run_id: RunId
    attempt: Attempt
    waiting: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list,
                                                                description="waitpoints it waits for in memory")


class HeartbeatRequest(StrictModel):
    node_id: Identifier
    attempts: list[LeasedAttempt]
    incarnation: str | None = Field(None, min_length=1, max_length=32,
                                    description="the node process's own token: a drain asked of it is its own")


class HeartbeatResponse(BaseModel):
    stop: list[str] = Field(default_factory=list, description="run ids the worker must terminate")
    completed: list[WaitpointResult] = Field(default_factory=list, description="waitpoints now complete")
    drain: bool = Field(False, description="the node was asked to drain (`outlast worker drain`)")


class WorkerNode(BaseModel):
    """A worker node as the runtime last saw it (`GET /api/v1/worker/nodes/{node_id}`)."""

    node_id: str
    last_seen_at: Moment = Field(description="its last heartbeat")
    drain_requested_at: Moment | None = Field(None, description="when a drain was asked of its current process")
    draining: bool = Field(False, description="a heartbeat since then was told to drain: it claims nothing more")
    attempts: int = Field(description="attempts the node holds now (executing, or waiting in its memory)")
    import_error: str | None = Field(None, description="`outlast dev`: why its working copy does not import")


class AttemptOutcome(enum.StrEnum):
    OK = "ok"
    ERROR = "error"
    CRASHED = "crashed"
    TIMED_OUT = "timed_out"
    RELEASED = "released"  # claimed but never started (the worker is stopping): back to the queue


class AttemptCompletion(StrictModel):
    run_id: RunId
    attempt: Attempt
    outcome: AttemptOutcome
    output: Any = None
    error: TaskRunError | None = None
    retryable: bool = True
    duration_ms: Milliseconds = 0
    cpu_ms: Milliseconds | None = Field(None, description="CPU time the attempt used (from its cgroup)")
    peak_memory_bytes: int | None = Field(None, ge=0, le=2**62, description="its memory high-water mark")


class LogRecord(StrictModel):
    run_id: RunId
    attempt: Attempt
    level: str = Field("info", max_length=16)
    message: str
    attributes: dict[str, Any] = Field(default_factory=dict)
    time: Moment


class MetadataUpdate(StrictModel):
    run_id: RunId
    ops: list[MetadataOp]


class WorkerReport(StrictModel):
    """Buffered output of running attempts, flushed together: logs first, then metadata."""

    node_id: Identifier | None = Field(None, description="the reporting node: a run another node holds refuses it")
    logs: list[LogRecord] = Field(default_factory=list)
    metadata: list[MetadataUpdate] = Field(default_factory=list)
    completions: list[AttemptCompletion] = Field(default_factory=list)
