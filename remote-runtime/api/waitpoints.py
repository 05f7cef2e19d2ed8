"""Waitpoint tokens over HTTP (`/api/v1/waitpoints`): create, complete, inspect, and the callback URL.

The callback URL carries the token's own secret instead of an API key, so a third party (a
payment provider, an approval form) can complete the token with a plain POST of its JSON body.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from outlast.wire import API_PREFIX, CompleteTokenRequest, CreateTokenRequest, Waitpoint, WaitToken

from ..errors import EngineError
from .deps import Env, State

router = APIRouter(prefix=f"{API_PREFIX}/waitpoints", tags=["waitpoints"])


class InvalidCallbackBody(EngineError):
    status_code = 422
    code = "invalid_request"


@router.post("/tokens", response_model=WaitToken)
def create_token(body: CreateTokenRequest, env: Env, rt: State) -> WaitToken:
    return rt.engine.waits.create_token(env, body)


@router.post("/tokens/{token_id}/complete", response_model=Waitpoint)
def complete_token(token_id: str, body: CompleteTokenRequest, env: Env, rt: State) -> Waitpoint:
    return rt.engine.waits.complete_token(env, token_id, body.data)


@router.post("/tokens/{token_id}/callback/{secret}", response_model=Waitpoint)
async def token_callback(token_id: str, secret: str, request: Request, rt: State) -> Waitpoint:
    """The whole JSON body (or null for an empty one) becomes the token's data."""
    raw = await request.body()
    try:
        data: Any = json.loads(raw) if raw.strip() else None
    except ValueError as exc:
        raise InvalidCallbackBody(f"request body is not valid JSON: {exc}", field="body") from None
    return await run_in_threadpool(rt.engine.waits.complete_token, None, token_id, data, secret=secret)


@router.get("/{waitpoint_id}", response_model=Waitpoint)
def retrieve_waitpoint(waitpoint_id: str, env: Env, rt: State) -> Waitpoint:
    return rt.engine.waits.retrieve(env, waitpoint_id)
