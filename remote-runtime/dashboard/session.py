"""The dashboard's login session: a signed cookie naming the environment, and the CSRF token of each form.

The cookie is `<payload>.<hmac>` with the payload base64 JSON {env, sid, exp}; it is HttpOnly and
SameSite=Lax, so another site can neither read it nor make the browser send it on a cross-site POST.
The CSRF token is an HMAC of the session id: a forged form from elsewhere cannot know it.
The signing secret is OUTLAST_DASHBOARD_SECRET, or a random one kept in the data directory (every
replica sharing that directory or the variable accepts the same sessions).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

COOKIE = "outlast_session"
SESSION_SECONDS = 12 * 3600


@dataclass(frozen=True)
class Session:
    env_id: str
    sid: str


def load_secret(data_dir: Path) -> bytes:
    configured = os.environ.get("OUTLAST_DASHBOARD_SECRET")
    if configured:
        return configured.encode()
    path = data_dir / "dashboard.secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # O_EXCL: a racing replica's wins
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


class Sessions:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def _sign(self, text: str) -> str:
        return hmac.new(self.secret, text.encode(), hashlib.sha256).hexdigest()

    def issue(self, env_id: str) -> str:
        """The cookie value of a new session of `env_id`."""
        payload = {"env": env_id, "sid": secrets.token_urlsafe(16), "exp": int(time.time()) + SESSION_SECONDS}
        text = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()
        return f"{text}.{self._sign(text)}"

    def read(self, cookie: str | None) -> Session | None:
        """The session of a cookie, if it is ours and has not expired."""
        if not cookie or "." not in cookie:
            return None
        text, signature = cookie.rsplit(".", 1)
        if not hmac.compare_digest(signature, self._sign(text)):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(text))
        except ValueError:
            return None
        if payload.get("exp", 0) < time.time():
            return None
        return Session(env_id=payload["env"], sid=payload["sid"])

    def csrf_token(self, session: Session) -> str:
        return self._sign("csrf:" + session.sid)

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(token, self.csrf_token(session))
