"""Bulk actions API (`/api/v1/bulk-actions`): start a cancel or replay of every run matching a filter, follow it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from outlast.wire import API_PREFIX, BulkAction, BulkActionCreate

from .checked_input import CheckedRoute
from .deps import Env, State

router = APIRouter(prefix=f"{API_PREFIX}/bulk-actions", tags=["bulk actions"], route_class=CheckedRoute)
BulkActionId = Annotated[str, Path(min_length=1, max_length=40)]


@router.post("", response_model=BulkAction, status_code=202)
def create_bulk_action(body: BulkActionCreate, env: Env, rt: State) -> BulkAction:
    """Take the runs of the caller's environment matching `filter` now; the runtime works through them in chunks."""
    return rt.engine.bulk.create(env, body)


@router.get("/{bulk_action_id}", response_model=BulkAction)
def retrieve_bulk_action(bulk_action_id: BulkActionId, env: Env, rt: State) -> BulkAction:
    """The job's progress: `processed` of `total`, and `state` COMPLETED once every run is handled."""
    return rt.engine.bulk.retrieve(env, bulk_action_id)
