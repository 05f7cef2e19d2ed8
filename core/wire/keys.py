"""Secret key rotation (`POST /environments/{env}/keys/rotate`): the request and its one-time answer."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, field_validator

from .values import StrictModel, duration_field

# How long the replaced key keeps working by default: a day, time to roll the new key out to every
# web app, worker and CI secret. Zero ends it at once (a leaked key); a rotation never waits longer
# than a month.
DEFAULT_KEY_GRACE = 24 * 3600.0
MAX_KEY_GRACE = 30 * 24 * 3600.0


class KeyRotationRequest(StrictModel):
    """How long the key being replaced keeps working: seconds, or a duration such as "24h", "15m"."""

    grace: float = Field(default=DEFAULT_KEY_GRACE, ge=0, le=MAX_KEY_GRACE)

    _grace = field_validator("grace", mode="before")(duration_field)


class KeyRotation(BaseModel):
    """The environment's new secret key: shown once, stored only as a hash."""

    env: str
    secret_key: str
    key_hint: str
    rotated_at: datetime
    previous_key_expires_at: datetime
