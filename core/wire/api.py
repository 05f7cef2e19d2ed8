"""The public HTTP API (SDK <-> runtime): triggering, runs, tasks, and the error body."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator

from .flow import DebounceOptions, debounce_without_delay
from .machines import machine_name
from .values import (
    MAX_DURATION,
    MAX_TAGS,
    QueueOptions,
    RunStatus,
    StrictModel,
    TaskManifest,
    TaskRunError,
    delay_field,
    delay_within_range,
    duration_field,
)

API_PREFIX = "/api/v1"
MAX_BATCH_ITEMS = 1000


# --- triggering ------------------------------------------------------------------------------


class TriggerOptions(StrictModel):
    idempotency_key: str | None = Field(None, min_length=1, max_length=512)
    idempotency_key_ttl: float | None = Field(None, gt=0, le=MAX_DURATION, description="seconds; default 30 days")
    delay: float | datetime | None = Field(None, description="seconds from now (up to a year), or a point in time")
    ttl: float | None = Field(None, gt=0, le=MAX_DURATION,
                              description="expire if still queued after this many seconds")
    tags: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    queue: QueueOptions | None = None
    concurrency_key: str | None = Field(None, min_length=1, max_length=256)
    priority: int = Field(0, ge=-1_000_000, le=1_000_000, description="higher runs first")
    max_attempts: int | None = Field(None, ge=1, le=100)
    max_duration: float | None = Field(None, gt=0, le=MAX_DURATION)
    machine: str | None = None
    version: str | None = Field(None, max_length=64,
                                description="lock the run to this version (children use their parent's)")
    debounce: DebounceOptions | None = Field(None, description="collapse triggers with the same key into one run")

    _durations = field_validator("idempotency_key_ttl", "ttl", "max_duration", mode="before")(duration_field)

    _delay = field_validator("delay", mode="before")(delay_field)
    _delay_range = field_validator("delay")(delay_within_range)
    _debounce_alone = field_validator("debounce")(debounce_without_delay)

    @field_validator("queue", mode="before")
    @classmethod
    def _queue(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        if len(value) > MAX_TAGS:
            raise ValueError(f"at most {MAX_TAGS} tags per run, got {len(value)}")
        return list(dict.fromkeys(value))

    _machine = field_validator("machine")(machine_name)


class TriggerRequest(StrictModel):
    payload: Any = None
    options: TriggerOptions = Field(default_factory=TriggerOptions)


class BatchItem(StrictModel):
    task: str = Field(min_length=1, max_length=128)
    payload: Any = None
    options: TriggerOptions = Field(default_factory=TriggerOptions)


class BatchTriggerRequest(StrictModel):
    items: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class RunHandle(BaseModel):
    """Returned at once by a trigger: the run's id, and whether an idempotency key matched."""

    id: str
    task: str
    is_cached: bool = False


class BatchHandle(BaseModel):
    runs: list[RunHandle]


# --- runs ------------------------------------------------------------------------------------


class Run(BaseModel):
    id: str
    task: str
    env: str
    status: RunStatus
    payload: Any = None
    output: Any = None
    error: TaskRunError | None = None
    attempts: int = 0
    max_attempts: int
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    queue: str
    concurrency_key: str | None = None
    priority: int = 0
    idempotency_key: str | None = None
    version: str | None = None
    machine: str | None = None
    max_duration: float | None = None
    execution_ms: int = 0
    cpu_ms: int | None = Field(None, description="CPU time of its attempts, where limits are enforced")
    peak_memory_bytes: int | None = Field(None, description="the highest memory peak of its attempts")
    replayed_from: str | None = None
    created_at: datetime
    updated_at: datetime
    delay_until: datetime | None = None
    expires_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def is_final(self) -> bool:
        return self.status.is_final

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.COMPLETED


class RunList(BaseModel):
    data: list[Run]
    next_cursor: str | None = None


class RunEvent(BaseModel):
    """One entry of a run's timeline: a status change, a log line, an attempt's end."""

    id: int
    run_id: str
    time: datetime
    kind: str
    attempt: int | None = None
    level: str | None = None
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class RescheduleRequest(StrictModel):
    delay: float | datetime

    _delay = field_validator("delay", mode="before")(delay_field)
    _delay_range = field_validator("delay")(delay_within_range)


class TaskInfo(BaseModel):
    id: str
    version: str | None
    queue: str
    manifest: TaskManifest


class ErrorBody(BaseModel):
    """Body of every 4xx/5xx answer; `field` names the offending input when there is one."""

    error: str
    message: str
    field: str | None = None
    details: list[dict[str, Any]] | None = None
