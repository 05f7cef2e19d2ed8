"""Schedules API (`/api/v1/schedules`): create (upsert by deduplication key), list, read, change, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from outlast.wire import API_PREFIX, Schedule, ScheduleCreate, ScheduleList, ScheduleType, ScheduleUpdate

from .checked_input import CheckedRoute
from .deps import Env, State

router = APIRouter(prefix=f"{API_PREFIX}/schedules", tags=["schedules"], route_class=CheckedRoute)


@router.post("", response_model=Schedule)
def create_schedule(body: ScheduleCreate, env: Env, rt: State) -> Schedule:
    """Create a schedule; with a `deduplication_key` already in use, update that one instead."""
    return rt.scheduler.create(env, body)


@router.get("", response_model=ScheduleList)
def list_schedules(
    env: Env,
    rt: State,
    task: str | None = None,
    external_id: str | None = None,
    type: ScheduleType | None = None,
    active: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> ScheduleList:
    return rt.scheduler.list(env, task=task, external_id=external_id, type=type, active=active, limit=limit,
                             cursor=cursor)


@router.get("/{schedule_id}", response_model=Schedule)
def retrieve_schedule(schedule_id: str, env: Env, rt: State) -> Schedule:
    return rt.scheduler.retrieve(env, schedule_id)


@router.patch("/{schedule_id}", response_model=Schedule)
def update_schedule(schedule_id: str, body: ScheduleUpdate, env: Env, rt: State) -> Schedule:
    return rt.scheduler.update(env, schedule_id, body)


@router.post("/{schedule_id}/activate", response_model=Schedule)
def activate_schedule(schedule_id: str, env: Env, rt: State) -> Schedule:
    return rt.scheduler.set_active(env, schedule_id, True)


@router.post("/{schedule_id}/deactivate", response_model=Schedule)
def deactivate_schedule(schedule_id: str, env: Env, rt: State) -> Schedule:
    return rt.scheduler.set_active(env, schedule_id, False)


@router.delete("/{schedule_id}", response_model=Schedule)
def delete_schedule(schedule_id: str, env: Env, rt: State) -> Schedule:
    return rt.scheduler.delete(env, schedule_id)
