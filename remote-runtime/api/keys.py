"""Secret key rotation (`POST /api/v1/environments/{env_id}/keys/rotate`).

Who may rotate an environment's key: whoever holds its current key, as with Trigger.dev's
"regenerate" button, which any member who can see the key may press. The runtime has no admin
credential above the environments' keys (it creates them at its first start and prints them once),
so there is nobody else to ask. A replaced key still in its grace period may not rotate: a leaked
old key must not be able to take the environment from whoever holds the new one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Path
from starlette.concurrency import run_in_threadpool

from outlast.wire import API_PREFIX, ErrorBody
from outlast.wire.keys import KeyRotation, KeyRotationRequest

from ..access.environments import RotationRefused
from .checked_input import CheckedRoute
from .deps import Env, Forbidden, State, presented_key

router = APIRouter(prefix=f"{API_PREFIX}/environments", tags=["keys"], route_class=CheckedRoute)
EnvId = Annotated[str, Path(min_length=1, max_length=32, description="The environment: dev, prod.")]


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@router.post("/{env_id}/keys/rotate", response_model=KeyRotation, responses={
    401: {"model": ErrorBody, "description": "No key, an unknown key, or a replaced key whose grace period ended"},
    403: {"model": ErrorBody, "description": "A key of another environment, or a replaced key in its grace period"},
})
async def rotate_key(env_id: EnvId, env: Env, rt: State, body: KeyRotationRequest | None = None,
                     authorization: Annotated[str | None, Header()] = None) -> KeyRotation:
    """A new secret key for the environment, answered once (only its hash is stored). The key used for
    this request keeps working for `grace` seconds (default 24 h, 0 to end it now), then gets a 401."""
    del env  # authenticated: the key is the environment's (current or in its grace period)
    grace = (body or KeyRotationRequest()).grace
    try:
        rotation = await run_in_threadpool(rt.environments.rotate, env_id, presented_key(authorization), grace)
    except RotationRefused as exc:
        raise Forbidden(str(exc), field="authorization") from None
    return KeyRotation(env=rotation.env_id, secret_key=rotation.key, key_hint=rotation.key[-4:],
                       rotated_at=_moment(rotation.rotated_at),
                       previous_key_expires_at=_moment(rotation.previous_key_expires_at))
