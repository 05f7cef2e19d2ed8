"""Flow control on the wire: a trigger's debounce options, and bulk actions over runs matching a filter."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from .values import MAX_DELAY, Identifier, Moment, RunStatus, StrictModel, duration_field

MAX_DEBOUNCE_KEY = 512  # as an idempotency key
MAX_FILTER_VALUES = 100


class DebounceMode(enum.StrEnum):
    """trailing: the run starts `delay` after the last trigger, with its payload; leading: at once, with the first's."""

    TRAILING = "trailing"
    LEADING = "leading"


class DebounceOptions(StrictModel):
    """Triggers of one task with the same `key` (in one environment) within `delay` of each other are one run."""

    key: str = Field(min_length=1, max_length=MAX_DEBOUNCE_KEY)
    delay: float = Field(gt=0, le=MAX_DELAY, description="seconds (or '5s', '1m'): the quiet time that ends a window")
    max_delay: float | None = Field(None, gt=0, le=MAX_DELAY,
                                    description="the window never lasts longer than this after its first trigger")
    mode: DebounceMode = DebounceMode.TRAILING

    _durations = field_validator("delay", "max_delay", mode="before")(duration_field)

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("a debounce key must not contain NUL characters")
        return value

    @field_validator("max_delay")
    @classmethod
    def _max_delay(cls, value: float | None, info: ValidationInfo) -> float | None:
        delay = info.data.get("delay")
        if value is not None and delay is not None and value < delay:
            raise ValueError(f"max_delay ({value:g}s) must not be shorter than delay ({delay:g}s)")
        return value


# --- bulk actions ----------------------------------------------------------------------------------


class BulkActionKind(enum.StrEnum):
    CANCEL = "cancel"
    REPLAY = "replay"


class BulkActionState(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"


FilterText = Annotated[str, Field(min_length=1, max_length=128)]


class BulkFilter(StrictModel):
    """Which runs a bulk action handles: those matching every given criterion (tags: any of them)."""

    status: list[RunStatus] = Field(default_factory=list, max_length=len(RunStatus))
    task: list[Identifier] = Field(default_factory=list, max_length=MAX_FILTER_VALUES)
    tag: list[FilterText] = Field(default_factory=list, max_length=MAX_FILTER_VALUES)
    version: str | None = Field(None, min_length=1, max_length=64)
    created_after: Moment | None = None
    created_before: Moment | None = None

    @field_validator("status", "task", "tag", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _not_everything(self) -> BulkFilter:
        # An empty filter would cancel or replay every run of the environment: almost always a mistake.
        if not (self.status or self.task or self.tag or self.version or self.created_after or self.created_before):
            raise ValueError("give at least one of status, task, tag, version, created_after, created_before")
        return self


class BulkActionCreate(StrictModel):
    action: BulkActionKind
    filter: BulkFilter


class BulkAction(BaseModel):
    """A bulk action's progress: `total` runs matched when it was created; `processed` of them handled so far
    (`succeeded` canceled or replayed, `skipped` already finished or no longer replayable)."""

    id: str
    env: str
    action: BulkActionKind
    filter: BulkFilter
    state: BulkActionState
    total: int
    processed: int
    succeeded: int
    skipped: int
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None

    @property
    def is_done(self) -> bool:
        return self.state is BulkActionState.COMPLETED



def debounce_without_delay(value: DebounceOptions | None, info: ValidationInfo) -> DebounceOptions | None:
    """A trigger options' `field_validator("debounce")` body: `debounce.delay` sets a debounced run's start,
    so a `delay` beside it is refused rather than silently ignored."""
    if value is not None and info.data.get("delay") is not None:
        raise ValueError("a debounced run starts debounce.delay after the last trigger; give delay or debounce, "
                         "not both")
    return value
