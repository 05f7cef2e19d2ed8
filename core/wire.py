"""The wire contract: every message that crosses a process boundary.

Both sides import these models, so the HTTP API (SDK <-> runtime, remote worker <-> runtime)
and the control channel (supervisor <-> task process) cannot drift apart. See
docs/protocol.md for the control channel's framing and message order.
"""

from __future__ import annotations

import enum
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

API_PREFIX = "/api/v1"
MAX_TAGS = 10
MAX_BATCH_ITEMS = 1000
MACHINE_PRESETS = ("micro", "small-1x", "small-2x", "medium-1x", "medium-2x", "large-1x", "large-2x")


class RunStatus(enum.StrEnum):
    DELAYED = "DELAYED"
    QUEUED = "QUEUED"
    EXECUTING = "EXECUTING"
    WAITING = "WAITING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CRASHED = "CRASHED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    TIMED_OUT = "TIMED_OUT"
    SYSTEM_FAILURE = "SYSTEM_FAILURE"

    @property
    def is_final(self) -> bool:
        return self not in _LIVE_STATUSES


_LIVE_STATUSES = {RunStatus.DELAYED, RunStatus.QUEUED, RunStatus.EXECUTING, RunStatus.WAITING}
FINAL_STATUSES = frozenset(s for s in RunStatus if s.is_final)


# --- durations -----------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: float | int | str | timedelta) -> float:
    """Seconds from a number of seconds, a timedelta, or a string such as "90s", "1h30m", "2d"."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"invalid duration {value!r}: use seconds or a string like '30s', '5m', '1h30m', '2d'")
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        raise ValueError(f"invalid duration {value!r}")
    if seconds < 0:
        raise ValueError(f"duration must not be negative, got {value!r}")
    return seconds


Duration = Annotated[float, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _duration_field(value: Any) -> Any:
    return None if value is None else parse_duration(value)


# --- task configuration ------------------------------------------------------------------


class RetryPolicy(_Model):
    """Exponential backoff: delay(n) = min(max_delay, min_delay * factor ** (n - 1)), jittered."""

    max_attempts: int = Field(3, ge=1, le=100)
    min_delay: float = Field(1.0, ge=0)
    max_delay: float = Field(60.0, ge=0)
    factor: float = Field(2.0, ge=1)
    randomize: bool = True

    _durations = field_validator("min_delay", "max_delay", mode="before")(_duration_field)


class QueueOptions(_Model):
    name: str = Field(min_length=1, max_length=128)
    concurrency_limit: int | None = Field(None, ge=0, le=100_000)


class CatchUp(enum.StrEnum):
    """What a schedule does with ticks missed while no runtime was up: fire the latest once, or skip."""

    LAST = "last"
    SKIP = "skip"


def _timezone(value: str) -> str:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}: use an IANA name such as 'Europe/Paris' or 'UTC'") from None
    return value


class ScheduleSpec(_Model):
    """A declarative schedule, as a task's manifest carries it (`@schedules.task(cron=...)`)."""

    cron: str = Field(min_length=1, max_length=256)
    timezone: str = Field("UTC", max_length=64)
    catch_up: CatchUp = CatchUp.LAST

    _timezone = field_validator("timezone")(_timezone)


class TaskManifest(_Model):
    """What a worker tells the runtime about one task it can run."""

    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:/-]+$")
    export: str = ""
    module: str = ""
    queue: QueueOptions | None = None
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    max_duration: float | None = Field(None, gt=0)
    machine: str | None = None
    payload_schema: dict[str, Any] | None = None
    schedule: ScheduleSpec | None = None
    checkpoint_after: float | None = Field(
        None, ge=0, description="seconds a wait stays in memory before the process is checkpointed")


# --- triggering ------------------------------------------------------------------------------


class TriggerOptions(_Model):
    idempotency_key: str | None = Field(None, min_length=1, max_length=512)
    idempotency_key_ttl: float | None = Field(None, gt=0, description="seconds; default 30 days")
    delay: float | datetime | None = Field(None, description="seconds from now, or a point in time")
    ttl: float | None = Field(None, gt=0, description="expire if still queued after this many seconds")
    tags: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    queue: QueueOptions | None = None
    concurrency_key: str | None = Field(None, min_length=1, max_length=256)
    priority: int = Field(0, ge=-1_000_000, le=1_000_000, description="higher runs first")
    max_attempts: int | None = Field(None, ge=1, le=100)
    max_duration: float | None = Field(None, gt=0)
    machine: str | None = None
    version: str | None = Field(None, description="lock the run to this version (children use their parent's)")

    _durations = field_validator("idempotency_key_ttl", "ttl", "max_duration", mode="before")(_duration_field)

    @field_validator("delay", mode="before")
    @classmethod
    def _delay(cls, value: Any) -> Any:
        if value is None or isinstance(value, datetime):
            return value
        if isinstance(value, str) and "T" in value:
            return value  # ISO timestamp, parsed by pydantic
        return parse_duration(value)

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

    @field_validator("machine")
    @classmethod
    def _machine(cls, value: str | None) -> str | None:
        if value is not None and value not in MACHINE_PRESETS:
            raise ValueError(f"unknown machine preset {value!r}; choose one of {', '.join(MACHINE_PRESETS)}")
        return value


class TriggerRequest(_Model):
    payload: Any = None
    options: TriggerOptions = Field(default_factory=TriggerOptions)


class BatchItem(_Model):
    task: str = Field(min_length=1, max_length=128)
    payload: Any = None
    options: TriggerOptions = Field(default_factory=TriggerOptions)


class BatchTriggerRequest(_Model):
    items: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class RunHandle(BaseModel):
    """Returned at once by a trigger: the run's id, and whether an idempotency key matched."""

    id: str
    task: str
    is_cached: bool = False


class BatchHandle(BaseModel):
    runs: list[RunHandle]


# --- runs ------------------------------------------------------------------------------------


class TaskRunError(BaseModel):
    type: str
    message: str
    stack: str | None = None


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


class RescheduleRequest(_Model):
    delay: float | datetime

    _delay = field_validator("delay", mode="before")(TriggerOptions._delay.__func__)


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


# --- inside a run ----------------------------------------------------------------------------


class RunContext(BaseModel):
    """What a task function receives as `ctx`, and what the supervisor sends to start an attempt."""

    run_id: str
    attempt: int
    task: str
    env: str
    tags: list[str] = Field(default_factory=list)
    version: str | None = None
    queue: str = ""
    concurrency_key: str | None = None
    machine: str | None = None
    max_duration: float | None = None
    created_at: datetime
    metadata: dict[str, Any] = Field(default_factory=dict)


class MetadataOp(_Model):
    op: Literal["set", "delete", "append", "increment"]
    key: str = Field(min_length=1, max_length=256)
    value: Any = None


# --- waits (a run waits for time, other runs, or tokens) ----------------------------------------


class WaitpointKind(enum.StrEnum):
    DATETIME = "datetime"
    RUN = "run"
    TOKEN = "token"


class WaitSpec(_Model):
    """What one `wait.*` call inside a task waits for."""

    kind: WaitpointKind
    until: datetime | None = None  # DATETIME
    items: list[BatchItem] = Field(default_factory=list)  # RUN: the children to trigger and wait for
    token_id: str | None = None  # TOKEN


class WaitpointResult(BaseModel):
    """A completed waitpoint: a child run's outcome, a token's data (or its timeout), or a time reached."""

    id: str
    kind: WaitpointKind
    ok: bool = True
    output: Any = None
    error: TaskRunError | None = None
    timed_out: bool = False
    run_id: str | None = None  # the child run, for RUN waitpoints
    status: RunStatus | None = None  # the child's final status


class WaitpointState(BaseModel):
    id: str
    result: WaitpointResult | None = None  # None while pending


class CreateTokenRequest(_Model):
    timeout: float | datetime | None = Field(None, description="seconds (or '24h') from now, or a point in time")
    tags: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(default_factory=list)
    idempotency_key: str | None = Field(None, min_length=1, max_length=400)

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> Any:
        if value is None or isinstance(value, datetime) or (isinstance(value, str) and "T" in value):
            return value
        return parse_duration(value)


class CompleteTokenRequest(_Model):
    data: Any = None


class WaitToken(BaseModel):
    """A waitpoint token: wait for it in a task; complete it with its id or by POSTing to `url`."""

    id: str
    url: str
    timeout_at: datetime | None = None
    tags: list[str] = Field(default_factory=list)
    is_cached: bool = False


class Waitpoint(BaseModel):
    id: str
    kind: WaitpointKind
    status: Literal["PENDING", "COMPLETED"]
    output: Any = None
    timed_out: bool = False
    tags: list[str] = Field(default_factory=list)
    child_run_id: str | None = None
    timeout_at: datetime | None = None
    created_at: datetime
    completed_at: datetime | None = None


class CheckpointMode(enum.StrEnum):
    CRIU = "criu"  # the process image is on disk; the process is gone
    KEPT_ALIVE = "kept_alive"  # no checkpointing here: the process waits in memory on its node


class WaitRequest(_Model):
    node_id: str
    run_id: str
    attempt: int
    key: str = Field(min_length=1, max_length=64, description="unique per call within the attempt")
    spec: WaitSpec


class SuspendRequest(_Model):
    node_id: str
    run_id: str
    attempt: int
    mode: CheckpointMode
    waiting: list[str] = Field(description="the waitpoints the task still waits for")
    image_key: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    duration_ms: int = 0


class ResumeRequest(_Model):
    node_id: str
    run_id: str
    attempt: int


class TokenCall(_Model):
    """A task process creates or completes a token through its supervisor (it holds no API key)."""

    run_id: str = ""  # set by the supervisor
    key: str | None = None
    create: CreateTokenRequest | None = None
    complete_id: str | None = None
    data: Any = None


class ResumeInfo(BaseModel):
    mode: CheckpointMode
    image_key: str | None = None
    results: list[WaitpointResult] = Field(default_factory=list)
    detail: dict[str, Any] = Field(default_factory=dict)


# --- worker API (a supervisor on another node <-> the runtime) -------------------------------


class WorkerRegistration(_Model):
    node_id: str
    version: str
    tasks: list[TaskManifest]


class ClaimRequest(_Model):
    node_id: str
    task_ids: list[str] = Field(description="the tasks this worker can run")
    versions: list[str] | None = Field(None, description="deployed versions it runs; none: working-copy runs only")
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


class LeasedAttempt(_Model):
    run_id: str
    attempt: int
    waiting: list[str] = Field(default_factory=list, description="waitpoints it waits for in memory")


class HeartbeatRequest(_Model):
    node_id: str
    attempts: list[LeasedAttempt]


class HeartbeatResponse(BaseModel):
    stop: list[str] = Field(default_factory=list, description="run ids the worker must terminate")
    completed: list[WaitpointResult] = Field(default_factory=list, description="waitpoints now complete")


class AttemptOutcome(enum.StrEnum):
    OK = "ok"
    ERROR = "error"
    CRASHED = "crashed"
    TIMED_OUT = "timed_out"
    RELEASED = "released"  # claimed but never started (the worker is stopping): back to the queue


class AttemptCompletion(_Model):
    run_id: str
    attempt: int
    outcome: AttemptOutcome
    output: Any = None
    error: TaskRunError | None = None
    retryable: bool = True
    duration_ms: int = 0


class LogRecord(_Model):
    run_id: str
    attempt: int
    level: str = "info"
    message: str
    attributes: dict[str, Any] = Field(default_factory=dict)
    time: datetime


class MetadataUpdate(_Model):
    run_id: str
    ops: list[MetadataOp]


class WorkerReport(_Model):
    """Buffered output of running attempts, flushed together: logs first, then metadata."""

    logs: list[LogRecord] = Field(default_factory=list)
    metadata: list[MetadataUpdate] = Field(default_factory=list)
    completions: list[AttemptCompletion] = Field(default_factory=list)


# --- control channel (supervisor <-> task process) ---------------------------------------------


class Hello(_Model):
    """First frame of a task process: who it is and which tasks it found (or why it could not)."""

    type: Literal["hello"] = "hello"
    process_id: str
    pid: int
    tasks: list[TaskManifest] = Field(default_factory=list)
    import_error: str | None = None


class StartAttempt(_Model):
    type: Literal["start"] = "start"
    context: RunContext
    payload: Any = None


class Shutdown(_Model):
    type: Literal["shutdown"] = "shutdown"


class Heartbeat(_Model):
    type: Literal["heartbeat"] = "heartbeat"
    run_id: str


class Log(_Model):
    type: Literal["log"] = "log"
    record: LogRecord


class Metadata(_Model):
    type: Literal["metadata"] = "metadata"
    update: MetadataUpdate


class Result(_Model):
    type: Literal["result"] = "result"
    run_id: str
    attempt: int
    ok: bool
    output: Any = None
    error: TaskRunError | None = None
    retryable: bool = True


class Call(_Model):
    """A task asks its supervisor for something that needs the runtime: a wait, a token."""

    type: Literal["call"] = "call"
    call_id: int
    op: Literal["wait", "token"]
    wait: WaitSpec | None = None  # the supervisor adds which run and attempt
    token: TokenCall | None = None


class Reply(_Model):
    type: Literal["reply"] = "reply"
    call_id: int
    ok: bool = True
    waitpoints: list[WaitpointState] = Field(default_factory=list)
    token: WaitToken | None = None
    error: TaskRunError | None = None


class Resolved(_Model):
    """Waitpoints the task waits for have completed."""

    type: Literal["resolved"] = "resolved"
    results: list[WaitpointResult]


class Suspend(_Model):
    """Close the control connection and freeze until SIGUSR1 (the supervisor then checkpoints)."""

    type: Literal["suspend"] = "suspend"


class Suspended(_Model):
    type: Literal["suspended"] = "suspended"
    run_id: str


class Resumed(_Model):
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


# --- public access tokens (browsers read one run without the secret key) ------------------------

PUBLIC_TOKEN_PREFIX = "olpt_"
MAX_PUBLIC_TOKEN_TTL = 24 * 3600.0


class PublicTokenRequest(_Model):
    """`POST /auth/public-tokens`: a token that may read these runs, or runs carrying any of these tags."""

    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)
    runs: list[str] = Field(default_factory=list, max_length=100, validate_default=True)  # after tags: sees them
    ttl: float = Field(default=900.0, gt=0, le=MAX_PUBLIC_TOKEN_TTL)

    _ttl = field_validator("ttl", mode="before")(_duration_field)

    @field_validator("runs")
    @classmethod
    def _scoped(cls, runs: list[str], info: Any) -> list[str]:
        if not runs and not info.data.get("tags"):
            raise ValueError("a public token needs at least one run id in runs or one tag in tags")
        return runs


class PublicToken(BaseModel):
    token: str
    expires_at: datetime
    runs: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)


# --- schedules ---------------------------------------------------------------------------------


class ScheduleType(enum.StrEnum):
    DECLARATIVE = "DECLARATIVE"  # declared in code with @schedules.task; follows the task's deploys
    IMPERATIVE = "IMPERATIVE"  # created through the API, the SDK or the CLI


class ScheduleCreate(_Model):
    task: str = Field(min_length=1, max_length=128)
    cron: str = Field(min_length=1, max_length=256)
    timezone: str = Field("UTC", max_length=64)
    external_id: str | None = Field(None, min_length=1, max_length=256)
    deduplication_key: str | None = Field(None, min_length=1, max_length=256,
                                          description="a second create with the same key updates that schedule")
    catch_up: CatchUp = CatchUp.LAST
    active: bool = True

    _timezone = field_validator("timezone")(_timezone)


class ScheduleUpdate(_Model):
    """Fields to change; those left out keep their value."""

    task: str | None = Field(None, min_length=1, max_length=128)
    cron: str | None = Field(None, min_length=1, max_length=256)
    timezone: str | None = Field(None, max_length=64)
    external_id: str | None = Field(None, min_length=1, max_length=256)
    catch_up: CatchUp | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else _timezone(value)


class Schedule(BaseModel):
    id: str
    type: ScheduleType
    task: str
    cron: str
    timezone: str
    external_id: str | None = None
    deduplication_key: str | None = None
    catch_up: CatchUp = CatchUp.LAST
    active: bool
    next_run: datetime | None = Field(None, description="the next tick, while active")
    last_timestamp: datetime | None = Field(None, description="the last tick that fired")
    upcoming: list[datetime] = Field(default_factory=list, description="the next ticks, in UTC")
    created_at: datetime
    updated_at: datetime


class ScheduleList(BaseModel):
    data: list[Schedule]
    next_cursor: str | None = None


class ScheduledPayload(BaseModel):
    """The payload of a run started by a schedule."""

    type: ScheduleType
    timestamp: datetime = Field(description="the tick this run is for (not when it started)")
    last_timestamp: datetime | None = Field(None, description="the schedule's previous tick that fired")
    timezone: str
    schedule_id: str
    external_id: str | None = None
    upcoming: list[datetime] = Field(default_factory=list, description="the next 5 ticks")


# --- deployments ----------------------------------------------------------------------------------

COMMIT_HEADER = "x-outlast-commit"  # the git commit of the triggering code: runs use the version built from it


class DeploymentStatus(enum.StrEnum):
    BUILDING = "BUILDING"  # stored; environment and import step running
    READY = "READY"  # built and imported; current or not
    FAILED = "FAILED"  # build or import failed; never current


class DeployedTask(BaseModel):
    id: str
    queue: str | None = None


class Deployment(BaseModel):
    version: str = Field(description="YYYYMMDD.N, immutable")
    env: str
    status: DeploymentStatus
    current: bool = False
    git_commit: str | None = None
    git_branch: str | None = None
    requirements_hash: str | None = None
    bundle_sha256: str
    bundle_bytes: int
    files: int
    tasks: list[DeployedTask] = Field(default_factory=list)
    step: str = Field("", description="what the build is doing now, or did last")
    error: str | None = Field(None, description="why the build failed (an import error's traceback)")
    on_disk: bool = Field(True, description="False once garbage-collected (its bundle stays in the store)")
    created_at: datetime
    built_at: datetime | None = None
    promoted_at: datetime | None = None


class PromoteRequest(_Model):
    version: str | None = Field(None, description="promote this version")
    commit: str | None = Field(None, min_length=4, max_length=64,
                               description="or the newest ready version built from this git commit")


class EnvVar(BaseModel):
    name: str
    hint: str = Field(description="the value is never shown in full: its last characters only")
    created_at: datetime
    updated_at: datetime


class EnvVarSet(_Model):
    value: str = Field(max_length=65536)


class WorkerDeployments(BaseModel):
    """What a remote deployment worker serves for its environment (`GET /worker/deployments`)."""

    versions: list[str] = Field(description="READY versions on disk or with unfinished runs")
    task_ids: list[str]
    current: list[str] = Field(description="current versions: kept warm")
    configs: dict[str, dict[str, Any]] = Field(description="each version's modules, env and requirements")
