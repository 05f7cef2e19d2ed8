"""Value types every protocol shares: run statuses, durations, a task's configuration and context."""

from __future__ import annotations

import enum
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from .machines import MACHINES, machine_name

MAX_TAGS = 10
MACHINE_PRESETS = tuple(MACHINES)


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
    if not math.isfinite(seconds):
        raise ValueError(f"duration must be a finite number of seconds, got {value!r}")
    if seconds < 0:
        raise ValueError(f"duration must not be negative, got {value!r}")
    return seconds


# The documented ranges of the API: a delay (or token timeout) up to one year ahead, every other
# duration (ttl, max_duration, idempotency_key_ttl, retry delays) up to one year, points in time
# between 1970 and 3000, attempt numbers and milliseconds within the store's integer columns.
MAX_DELAY = 365 * 86400.0
MAX_DURATION = 365 * 86400.0
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
MAX_ATTEMPT = 2**31 - 1
MAX_MILLISECONDS = 2**53

Duration = Annotated[float, Field(ge=0, le=MAX_DURATION)]


def moment_in_range(value: datetime) -> datetime:
    """A point in time the store can hold: between 1970 and 3000 (a naive one is UTC)."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not EARLIEST <= aware < LATEST:
        raise ValueError(f"a point in time must be between {EARLIEST.year} and {LATEST.year}, got {value.isoformat()}")
    return value


Moment = Annotated[datetime, AfterValidator(moment_in_range)]
Attempt = Annotated[int, Field(ge=0, le=MAX_ATTEMPT)]
Milliseconds = Annotated[int, Field(ge=0, le=MAX_MILLISECONDS)]
Identifier = Annotated[str, Field(min_length=1, max_length=128)]


class StrictModel(BaseModel):
    """Base of every request-like model: an unknown field is an error, not silently dropped; no NaN or inf."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def duration_field(value: Any) -> Any:
    """A `field_validator(mode="before")` body: a duration (or None) as seconds."""
    return None if value is None else parse_duration(value)


def delay_field(value: Any) -> Any:
    """A `field_validator(mode="before")` body: seconds from now (a duration) or a point in time."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str) and "T" in value:
        return value  # ISO timestamp, parsed by pydantic
    return parse_duration(value)


def delay_within_range(value: float | datetime | None) -> float | datetime | None:
    """A `field_validator` (after) body: a delay at most `MAX_DELAY` ahead, as seconds or a point in time."""
    if isinstance(value, datetime):
        moment_in_range(value)
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        if aware - datetime.now(UTC) > timedelta(seconds=MAX_DELAY):
            raise ValueError(f"a point in time at most one year ahead ({MAX_DELAY:g}s), got {value.isoformat()}")
    elif value is not None and value > MAX_DELAY:
        raise ValueError(f"at most one year ({MAX_DELAY:g}s), got {value:g}s")
    return value


def timezone_name(value: str) -> str:
    """The IANA time zone name itself, or `ValueError` naming it when it is unknown."""
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}: use an IANA name such as 'Europe/Paris' or 'UTC'") from None
    return value


# --- task configuration ------------------------------------------------------------------


class OutOfMemoryRetry(StrictModel):
    """What an attempt that ran out of memory is retried on (Trigger.dev's `retry.outOfMemory`)."""

    machine: str | None = Field(None, description="the machine preset of the retry")

    _machine = field_validator("machine")(machine_name)


class RetryPolicy(StrictModel):
    """Exponential backoff: delay(n) = min(max_delay, min_delay * factor ** (n - 1)), jittered."""

    max_attempts: int = Field(3, ge=1, le=100)
    min_delay: float = Field(1.0, ge=0, le=MAX_DURATION)
    max_delay: float = Field(60.0, ge=0, le=MAX_DURATION)
    factor: float = Field(2.0, ge=1, le=100)  # 100 ** 99 still fits a float
    randomize: bool = True
    out_of_memory: OutOfMemoryRetry | None = None

    _durations = field_validator("min_delay", "max_delay", mode="before")(duration_field)


MAX_RATE_PERIOD = 7 * 86400.0


class RateLimit(StrictModel):
    """At most `limit` runs of a queue (of each of its concurrency keys) start per `period`, spread evenly:
    one every `period / limit` seconds, or up to `burst` at once after a quiet spell (GCRA). With the
    default burst of 1 no window of `period` seconds holds more than `limit` starts.

    Also written as Celery's `"10/m"` (`"N/s"`, `"N/m"`, `"N/h"`, or `"N/<duration>"` such as `"5/30s"`)."""

    limit: int = Field(ge=1, le=1_000_000)
    period: float = Field(gt=0, le=MAX_RATE_PERIOD, description="seconds, or a duration such as '1m'")
    burst: int = Field(1, ge=1, le=1_000_000)

    _period = field_validator("period", mode="before")(duration_field)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        count, slash, period = value.strip().partition("/")
        if not slash or not count.strip().isdigit():
            raise ValueError(f"invalid rate limit {value!r}: use 'N/s', 'N/m', 'N/h' or 'N/<duration>' like '5/30s'")
        period = period.strip()
        return {"limit": int(count), "period": "1" + period if period in ("s", "m", "h", "d") else period}

    @model_validator(mode="after")
    def _burst_within_limit(self) -> RateLimit:
        if self.burst > self.limit:
            raise ValueError(f"burst ({self.burst}) must not exceed limit ({self.limit})")
        return self

    @property
    def interval(self) -> float:
        """Seconds between two starts at the steady rate."""
        return self.period / self.limit


class QueueOptions(StrictModel):
    name: str = Field(min_length=1, max_length=128)
    concurrency_limit: int | None = Field(None, ge=0, le=100_000)
    rate_limit: RateLimit | None = None


class Queue(BaseModel):
    """A queue as the API shows it (`GET /api/v1/queues/{name}`): its limits and what it holds now."""

    name: str
    concurrency_limit: int | None = None
    rate_limit: RateLimit | None = None
    running: int = Field(0, description="runs of the queue executing now, over all its concurrency keys")
    queued: int = Field(0, description="runs ready to start (counted up to 10,000)")
    rate_limited: int = Field(0, description="of those, runs held back by the rate limit until their turn")


class CatchUp(enum.StrEnum):
    """What a schedule does with ticks missed while no runtime was up: fire the latest once, or skip."""

    LAST = "last"
    SKIP = "skip"


class ScheduleSpec(StrictModel):
    """A declarative schedule, as a task's manifest carries it (`@schedules.task(cron=...)`)."""

    cron: str = Field(min_length=1, max_length=256)
    timezone: str = Field("UTC", max_length=64)
    catch_up: CatchUp = CatchUp.LAST

    _timezone = field_validator("timezone")(timezone_name)


class TaskManifest(StrictModel):
    """What a worker tells the runtime about one task it can run."""

    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:/-]+$")
    export: str = Field("", max_length=512)
    module: str = Field("", max_length=512)
    queue: QueueOptions | None = None
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    max_duration: float | None = Field(None, gt=0, le=MAX_DURATION)
    machine: str | None = Field(None, max_length=32)
    payload_schema: dict[str, Any] | None = None
    schedule: ScheduleSpec | None = None
    checkpoint_after: float | None = Field(
        None, ge=0, le=MAX_DURATION, description="seconds a wait stays in memory before the process is checkpointed")
    network: bool = Field(True, strict=True, description=(
        "false: its task processes have only a loopback interface of their own (no outbound network)"))

    _machine = field_validator("machine")(machine_name)


# --- inside a run ----------------------------------------------------------------------------


class TaskRunError(BaseModel):
    type: str
    message: str
    stack: str | None = None


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


class MetadataOp(StrictModel):
    op: Literal["set", "delete", "append", "increment"]
    key: str = Field(min_length=1, max_length=256)
    value: Any = None
