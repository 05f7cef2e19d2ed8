"""Waitpoint tokens over HTTP (`/api/v1/waitpoints`): create, complete, inspect, and the callback URL.

The callback URL carries the token's own secret instead of an API key, so a third party (a
payment provider, an approval form) can complete the token with a plain POST of its JSON body.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool

from outlast.wire import API_PREFIX, CompleteTokenRequest, CreateTokenRequest, Waitpoint, WaitToken

from .checked_input import CheckedRoute
from .deps import Env, State

router = APIRouter(prefix=f"{API_PREFIX}/waitpoints", tags=["waitpoints"], route_class=CheckedRoute)


# The secret is token_urlsafe: anything else cannot match (and must not reach the constant-time compare).
CallbackSecret = Annotated[str, Path(max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]


@router.post("/tokens", response_model=WaitToken)
def create_token(body: CreateTokenRequest, env: Env, rt: State) -> WaitToken:
    return rt.engine.waits.create_token(env, body)


@router.post("/tokens/{token_id}/complete", response_model=Waitpoint)
def complete_token(token_id: str, body: CompleteTokenRequest, env: Env, rt: State) -> Waitpoint:
    return rt.engine.waits.complete_token(env, token_id, body.data)


@router.post("/tokens/{token_id}/callback/{secret}", response_model=Waitpoint)
async def token_callback(token_id: str, secret: CallbackSecret, request: Request, rt: State) -> Waitpoint:
    """The whole JSON body (or null for an empty one) becomes the token's data."""
    raw = await request.body()
    # A CheckedJSONRequest (see CheckedRoute), whatever the body's content type: the checked document.
    data: Any = await request.json() if raw.strip() else None
    return await run_in_threadpool(rt.engine.waits.complete_token, None, token_id, data, secret=secret)


@router.get("/{waitpoint_id}", response_model=Waitpoint)
def retrieve_waitpoint(waitpoint_id: str, env: Env, rt: State) -> Waitpoint:
    return rt.engine.waits.retrieve(env, waitpoint_id)
