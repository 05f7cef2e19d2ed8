"""Public access tokens: a browser reads chosen runs without the secret key."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator

from .values import MAX_TAGS, StrictModel, duration_field

PUBLIC_TOKEN_PREFIX = "olpt_"
MAX_PUBLIC_TOKEN_TTL = 24 * 3600.0


class PublicTokenRequest(StrictModel):
    """`POST /auth/public-tokens`: a token that may read these runs, or runs carrying any of these tags."""

    tags: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(default_factory=list,
                                                                            max_length=MAX_TAGS)
    runs: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=100,
                                                                           validate_default=True)  # sees tags
    ttl: float = Field(default=900.0, gt=0, le=MAX_PUBLIC_TOKEN_TTL)

    _ttl = field_validator("ttl", mode="before")(duration_field)

    @field_validator("runs")
    @classmethod
    def _scoped(cls, runs: list[str], info: Any) -> list[str]:
        if not runs and not info.data.get("tags"):
            raise ValueError("a public token needs at least one run id in runs or one tag in tags")
        return runs


class PublicToken(BaseModel):
    token: str
    expires_at: datetime
    runs: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
