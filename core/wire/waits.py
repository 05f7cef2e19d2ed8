"""Waitpoints: what a run waits for (time, other runs, tokens) and how a waitpoint completes."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from .api import MAX_BATCH_ITEMS, BatchItem
from .values import Moment, RunStatus, StrictModel, TaskRunError, delay_field, delay_within_range


class WaitpointKind(enum.StrEnum):
    DATETIME = "datetime"
    RUN = "run"
    TOKEN = "token"


class WaitSpec(StrictModel):
    """What one `wait.*` call inside a task waits for."""

    kind: WaitpointKind
    until: Moment | None = None  # DATETIME
    items: list[BatchItem] = Field(default_factory=list, max_length=MAX_BATCH_ITEMS)  # RUN: the children
    token_id: str | None = Field(None, max_length=64)  # TOKEN


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


class CreateTokenRequest(StrictModel):
    timeout: float | datetime | None = Field(None, description="seconds (or '24h') from now, or a point in time")
    tags: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(default_factory=list)
    idempotency_key: str | None = Field(None, min_length=1, max_length=400)

    _timeout = field_validator("timeout", mode="before")(delay_field)
    _timeout_range = field_validator("timeout")(delay_within_range)


class CompleteTokenRequest(StrictModel):
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


class TokenCall(StrictModel):
    """A task process creates or completes a token through its supervisor (it holds no API key)."""

    run_id: str = Field("", max_length=64)  # set by the supervisor
    key: str | None = Field(None, max_length=64)
    create: CreateTokenRequest | None = None
    complete_id: str | None = Field(None, max_length=64)
    data: Any = None
