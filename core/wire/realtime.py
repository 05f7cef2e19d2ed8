"""The realtime contract: run changes and stream chunks as Server-Sent Events, and stream writes.

Every SSE message carries `id: <cursor>`; a client that reconnects sends it back as
`Last-Event-ID` and gets what came after it, on any replica. A cursor is opaque text
(`<txid>-<id>` today): compare cursors only for equality.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from .api import Run
from .values import StrictModel

MAX_BATCH_SUBSCRIPTION = 100  # runs in one `?batch=` subscription
STREAM_NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
# SSE event names: a run change, a log line, a stream chunk, and the end of what was asked for.
RUN_EVENT = "run"
LOG_EVENT = "log"
CHUNK_EVENT = "chunk"
END_EVENT = "end"


class RunChange(BaseModel):
    """One change of a run (the `data` of an SSE `run` or `log` event)."""

    cursor: str
    run_id: str
    kind: str  # status | metadata | tags | log | ... (the timeline's kinds)
    time: datetime
    status: str | None = None  # the status this change moved the run to, for kind == "status"
    attempt: int | None = None
    level: str | None = None
    message: str = ""
    run: Run | None = None  # the run as it is when the change is sent (None for log lines)


class StreamChunk(BaseModel):
    """One chunk of a run's named stream (the `data` of an SSE `chunk` event)."""

    cursor: str
    run_id: str
    name: str
    data: Any = None


class StreamEnd(BaseModel):
    """The `data` of an SSE `end` event: the run (or every run of a batch) is final and all was sent."""

    run_id: str | None = None
    status: str | None = None
    statuses: dict[str, str] = Field(default_factory=dict)  # a batch's: run id -> final status


class StreamAppend(StrictModel):
    """A task appends chunks to one of its streams (a control call; the supervisor adds the run).

    `first_seq` is the writer's count of chunks it sent before these (per attempt): the runtime
    stores each (attempt, seq) once, so a call repeated after a checkpoint adds nothing twice.
    """

    name: str = Field(pattern=STREAM_NAME_PATTERN)
    first_seq: int = Field(ge=0)
    chunks: list[Any] = Field(min_length=1, max_length=10_000)


class StreamWrite(StrictModel):
    """A worker writes a task's stream chunks (`POST /api/v1/worker/streams`)."""

    run_id: str = Field(max_length=40)
    attempt: int = Field(ge=1)
    append: StreamAppend


class StreamWritten(BaseModel):
    chunks: int  # the stream's chunks so far
    bytes: int  # and their size


StreamErrorKind = Literal["chunk_too_large", "stream_too_large", "run_not_executing"]
