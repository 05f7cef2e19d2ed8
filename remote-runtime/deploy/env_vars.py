"""Environment variables per environment, encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256).

The key comes from OUTLAST_ENCRYPTION_KEY (a Fernet key; set it on every replica that shares a
PostgreSQL store) or, on a single node, from `<data_dir>/encryption.key`, generated on first use
with mode 0600. Values are decrypted only to start task processes; the API shows a hint (the last
characters) and never the value.
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from outlast.wire import EnvVar

from ..engine.scope import EnvScope
from ..errors import EngineError
from ..store.db import Database
from ..store.queue import upsert
from ..store.schema import env_vars

KEY_ENV = "OUTLAST_ENCRYPTION_KEY"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")
# The runtime's own settings are not for task code to set or see.
_RESERVED = ("OUTLAST_DATABASE_URL", "OUTLAST_SECRET_KEY", "OUTLAST_DATA_DIR", KEY_ENV)


class InvalidEnvVar(EngineError):
    status_code = 422
    code = "invalid_request"


class EnvVarNotFound(EngineError):
    status_code = 404
    code = "not_found"


def load_key(data_dir: Path) -> bytes:
    from cryptography.fernet import Fernet

    configured = os.environ.get(KEY_ENV)
    if configured:
        return configured.encode()
    path = Path(data_dir) / "encryption.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
    return path.read_bytes().strip()


def _hint(value: str) -> str:
    return "****" + value[-4:] if len(value) >= 12 else "****"


class EnvVars:
    def __init__(self, db: Database, key: bytes) -> None:
        from cryptography.fernet import Fernet

        self.db = db
        self._fernet = Fernet(key)

    def set(self, env_id: str, name: str, value: str) -> EnvVar:
        if not _NAME.fullmatch(name):
            raise InvalidEnvVar(f"{name!r} is not a variable name (letters, digits, _; not starting with a digit)",
                                field="name")
        if name in _RESERVED:
            raise InvalidEnvVar(f"{name} is the runtime's own setting and cannot be set for tasks", field="name")
        now = time.time()
        token = self._fernet.encrypt(value.encode()).decode()
        scope = EnvScope(self.db, env_id)
        with scope.begin() as c:
            stmt = upsert(c, env_vars).values(env_id=env_id, name=name, value=token, hint=_hint(value),
                                              created_at=now, updated_at=now)
            c.execute(stmt.on_conflict_do_update(index_elements=["env_id", "name"],
                                                 set_={"value": token, "hint": _hint(value), "updated_at": now}))
            row = c.execute(scope.select(env_vars).where(env_vars.c.name == name)).one()
        return _public(row)

    def list(self, env_id: str) -> list[EnvVar]:
        scope = EnvScope(self.db, env_id)
        with scope.connect() as c:
            rows = c.execute(scope.select(env_vars).order_by(env_vars.c.name)).all()
        return [_public(r) for r in rows]

    def delete(self, env_id: str, name: str) -> None:
        scope = EnvScope(self.db, env_id)
        with scope.begin() as c:
            gone = c.execute(scope.delete(env_vars).where(env_vars.c.name == name)).rowcount
        if not gone:
            raise EnvVarNotFound(f"no variable {name!r} in environment {env_id!r}", field="name")

    def values(self, env_id: str) -> dict[str, str]:
        """Decrypted, for a task process's environment only."""
        scope = EnvScope(self.db, env_id)
        with scope.connect() as c:
            rows = c.execute(scope.select(env_vars.c.name, env_vars.c.value)).all()
        return {r.name: self._fernet.decrypt(r.value.encode()).decode() for r in rows}


def _public(row: sa.Row) -> EnvVar:
    return EnvVar(name=row.name, hint=row.hint, created_at=datetime.fromtimestamp(row.created_at, UTC),
                  updated_at=datetime.fromtimestamp(row.updated_at, UTC))
