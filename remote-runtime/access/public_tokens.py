"""Short-lived public access tokens: a browser may read one run (or runs with a tag) without the secret key.

A token is stateless: `olpt_<claims>.<signature>`, the claims (environment, run ids, tags, expiry)
in base64url JSON, signed with HMAC-SHA256. Each environment signs with its own key, derived
from `OUTLAST_PUBLIC_TOKEN_SECRET` when set (replicas must share it) and otherwise from the
environment's stored key hash. Whoever reads that hash from the database can already read every
run, which is all a token grants; the secret key itself is never involved and never leaves the
app. A token cannot be revoked before it expires, so lifetimes are short (15 minutes by default,
one day at most).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from outlast.wire import PUBLIC_TOKEN_PREFIX, PublicToken, PublicTokenRequest

from ..errors import EngineError
from ..store.schema import environments

SECRET_ENV = "OUTLAST_PUBLIC_TOKEN_SECRET"
_CONTEXT = b"outlast public token v1:"


class InvalidToken(EngineError):
    status_code = 401
    code = "unauthorized"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PublicTokens:
    def __init__(self, db: object, secret: str | None = None) -> None:
        self.db = db
        self.secret = secret if secret is not None else os.environ.get(SECRET_ENV) or None
        self._keys: dict[str, bytes] = {}

    def _key(self, env_id: str) -> bytes:
        key = self._keys.get(env_id)
        if key is None:
            base = self.secret
            if base is None:
                with self.db.connect() as c:
                    base = c.execute(sa.select(environments.c.key_hash)
                                     .where(environments.c.id == env_id)).scalar_one_or_none()
                if base is None:
                    raise InvalidToken("public token for an unknown environment", field="authorization")
            key = hmac.new(base.encode(), _CONTEXT + env_id.encode(), hashlib.sha256).digest()
            self._keys[env_id] = key
        return key

    def mint(self, env_id: str, request: PublicTokenRequest, *, now: float | None = None) -> PublicToken:
        expires = (time.time() if now is None else now) + request.ttl
        claims = {"env": env_id, "runs": request.runs, "tags": request.tags, "exp": round(expires, 3)}
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = _b64(hmac.new(self._key(env_id), body.encode(), hashlib.sha256).digest())
        return PublicToken(token=f"{PUBLIC_TOKEN_PREFIX}{body}.{signature}", runs=request.runs, tags=request.tags,
                           expires_at=datetime.fromtimestamp(expires, UTC))

    def verify(self, token: str, *, now: float | None = None) -> dict:
        """The token's claims, or `InvalidToken` if it is malformed, forged or expired."""
        try:
            body, signature = token.removeprefix(PUBLIC_TOKEN_PREFIX).split(".")
            claims = json.loads(_unb64(body))
            env_id = claims["env"]
        except (ValueError, KeyError, TypeError):
            raise InvalidToken("malformed public token", field="authorization") from None
        expected = _b64(hmac.new(self._key(str(env_id)), body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise InvalidToken("invalid public token", field="authorization")
        if (time.time() if now is None else now) >= float(claims["exp"]):
            raise InvalidToken("public token has expired; ask the app for a new one", field="authorization")
        return claims


def is_public_token(credential: str) -> bool:
    return credential.startswith(PUBLIC_TOKEN_PREFIX)


def allows(claims: dict, run_id: str, run_tags: Callable[[], list[str]]) -> bool:
    """Whether a verified token's scope covers this run; the run's tags are looked up only if needed."""
    if run_id in claims.get("runs", ()):
        return True
    return bool(claims.get("tags")) and bool(set(claims["tags"]) & set(run_tags()))
