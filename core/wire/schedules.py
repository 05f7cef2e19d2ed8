"""Cron schedules: creating, changing and listing them, and the payload of a scheduled run."""

from __future__ import annotations

import enum
from datetime import datetime

from pydantic import BaseModel, Field, field_validator

from .values import CatchUp, StrictModel, timezone_name


class ScheduleType(enum.StrEnum):
    DECLARATIVE = "DECLARATIVE"  # declared in code with @schedules.task; follows the task's deploys
    IMPERATIVE = "IMPERATIVE"  # created through the API, the SDK or the CLI


class ScheduleCreate(StrictModel):
    task: str = Field(min_length=1, max_length=128)
    cron: str = Field(min_length=1, max_length=256)
    timezone: str = Field("UTC", max_length=64)
    external_id: str | None = Field(None, min_length=1, max_length=256)
    deduplication_key: str | None = Field(None, min_length=1, max_length=256,
                                          description="a second create with the same key updates that schedule")
    catch_up: CatchUp = CatchUp.LAST
    active: bool = True

    _timezone = field_validator("timezone")(timezone_name)


class ScheduleUpdate(StrictModel):
    """Fields to change; those left out keep their value."""

    task: str | None = Field(None, min_length=1, max_length=128)
    cron: str | None = Field(None, min_length=1, max_length=256)
    timezone: str | None = Field(None, max_length=64)
    external_id: str | None = Field(None, min_length=1, max_length=256)
    catch_up: CatchUp | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else timezone_name(value)


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
