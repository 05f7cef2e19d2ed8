"""The control channel (supervisor <-> task process): its frames, their unions, and the framing constant.

See docs/protocol.md for the framing and the order of messages.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from .realtime import StreamAppend, StreamWritten
from .values import RunContext, StrictModel, TaskManifest, TaskRunError
from .waits import TokenCall, WaitpointResult, WaitpointState, WaitSpec, WaitToken
from .worker import LogRecord, MetadataUpdate


class Hello(StrictModel):
    """First frame of a task process: who it is and which tasks it found (or why it could not)."""

    type: Literal["hello"] = "hello"
    process_id: str
    pid: int
    tasks: list[TaskManifest] = Field(default_factory=list)
    import_error: str | None = None


class StartAttempt(StrictModel):
    type: Literal["start"] = "start"
    context: RunContext
    payload: Any = None


class Shutdown(StrictModel):
    type: Literal["shutdown"] = "shutdown"


class Heartbeat(StrictModel):
    type: Literal["heartbeat"] = "heartbeat"
    run_id: str


class Log(StrictModel):
    type: Literal["log"] = "log"
    record: LogRecord


class Metadata(StrictModel):
    type: Literal["metadata"] = "metadata"
    update: MetadataUpdate


class Result(StrictModel):
    type: Literal["result"] = "result"
    run_id: str
    attempt: int
    ok: bool
    output: Any = None
    error: TaskRunError | None = None
    retryable: bool = True


class Call(StrictModel):
    """A task asks its supervisor for something that needs the runtime: a wait, a token."""

    type: Literal["call"] = "call"
    call_id: int
    op: Literal["wait", "token", "stream"]
    wait: WaitSpec | None = None  # the supervisor adds which run and attempt
    token: TokenCall | None = None
    stream: StreamAppend | None = None


class Reply(StrictModel):
    type: Literal["reply"] = "reply"
    call_id: int
    ok: bool = True
    waitpoints: list[WaitpointState] = Field(default_factory=list)
    token: WaitToken | None = None
    stream: StreamWritten | None = None
    error: TaskRunError | None = None


class Resolved(StrictModel):
    """Waitpoints the task waits for have completed."""

    type: Literal["resolved"] = "resolved"
    results: list[WaitpointResult]


class Suspend(StrictModel):
    """Close the control connection and freeze until SIGUSR1 (the supervisor then checkpoints)."""

    type: Literal["suspend"] = "suspend"


class Suspended(StrictModel):
    type: Literal["suspended"] = "suspended"
    run_id: str


class Resumed(StrictModel):
    """First frame after a restore (or after a kept-alive wait): who it is and what it still waits for."""

    type: Literal["resumed"] = "resumed"
    process_id: str
    pid: int
    run_id: str
    waiting: list[str]


ToSupervisor = Annotated[Hello | Heartbeat | Log | Metadata | Result | Call | Suspended | Resumed,
                         Field(discriminator="type")]
ToTaskProcess = Annotated[StartAttempt | Shutdown | Reply | Resolved | Suspend, Field(discriminator="type")]
to_supervisor: TypeAdapter[ToSupervisor] = TypeAdapter(ToSupervisor)
to_task_process: TypeAdapter[ToTaskProcess] = TypeAdapter(ToTaskProcess)

FRAME_HEADER_BYTES = 4  # big-endian length of the JSON body that follows
