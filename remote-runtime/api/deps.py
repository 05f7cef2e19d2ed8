"""Request dependencies shared by the routers: the runtime, the caller's environment, its errors."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from ..access.public_tokens import allows, is_public_token
from ..errors import EngineError
from ..state import RuntimeState


class Unauthorized(EngineError):
    status_code = 401
    code = "unauthorized"


class Forbidden(EngineError):
    status_code = 403
    code = "forbidden"


class PayloadTooLarge(EngineError):
    status_code = 413
    code = "payload_too_large"


# Dependencies are coroutines (a sync one would cost a thread hop per request); the rare I/O goes to a thread.
async def state(request: Request) -> RuntimeState:
    return request.app.state.outlast


def presented_key(authorization: str | None) -> str:
    """The secret key of an `Authorization: Bearer <key>` header; 401 without one."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("missing secret key: send 'Authorization: Bearer <OUTLAST_SECRET_KEY>'",
                           field="authorization")
    return authorization[7:].strip()


async def environment(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The environment of the request's secret key (`Authorization: Bearer <key>`)."""
    key = presented_key(authorization)
    environments = request.app.state.outlast.environments
    fresh, env_id = environments.cached(key)
    if not fresh:  # the store is asked (every few seconds per key): off the event loop
        env_id = await run_in_threadpool(environments.authenticate, key)
    if env_id is None:
        # A rotated key whose grace period ended says so, rather than looking like a typo.
        raise Unauthorized(await run_in_threadpool(environments.refusal, key), field="authorization")
    return env_id


async def run_reader(request: Request, run_id: str, authorization: Annotated[str | None, Header()] = None) -> str:
    """The environment of a secret key, or of a public token whose scope covers `run_id`."""
    credential = (authorization or "")[7:].strip()
    if not is_public_token(credential):
        return await environment(request, authorization)
    claims = request.app.state.public_tokens.verify(credential)
    if not allows(claims, run_id, lambda: request.app.state.outlast.engine.retrieve(claims["env"], run_id).tags):
        raise Unauthorized("this public token does not cover that run", field="authorization")
    return claims["env"]


Env = Annotated[str, Depends(environment)]
ReadEnv = Annotated[str, Depends(run_reader)]
State = Annotated[RuntimeState, Depends(state)]
