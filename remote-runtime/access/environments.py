"""Environments (dev, prod) and their secret keys, which are stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import sqlalchemy as sa

from outlast._errors import ConfigurationError

from ..store.schema import environments

DEFAULT_ENVIRONMENTS = ("dev", "prod")
MIN_KEY_LENGTH = 16


def hash_key(key: str) -> str:
    # Keys are 32 random bytes: a fast hash is enough; nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(env_id: str) -> str:
    return f"ol_{env_id}_{secrets.token_urlsafe(32)}"


class Environments:
    def __init__(self, db: object) -> None:
        self.db = db
        self._by_hash: dict[str, str] = {}

    def bootstrap(self, dev_key: str | None = None) -> dict[str, str]:
        """Create the default environments that do not exist yet; returns their new keys.

        `dev_key` (from OUTLAST_SECRET_KEY) seeds the dev environment so scripts and CI never need
        to read a generated key.
        """
        if dev_key is not None and len(dev_key) < MIN_KEY_LENGTH:
            raise ConfigurationError(f"OUTLAST_SECRET_KEY must be at least {MIN_KEY_LENGTH} characters")
        created: dict[str, str] = {}
        with self.db.begin() as c:
            existing = set(c.execute(sa.select(environments.c.id)).scalars())
            for env_id in DEFAULT_ENVIRONMENTS:
                if env_id in existing:
                    continue
                key = dev_key if env_id == "dev" and dev_key else new_key(env_id)
                c.execute(environments.insert().values(id=env_id, key_hash=hash_key(key), key_hint=key[-4:],
                                                       created_at=time.time()))
                created[env_id] = key
        return created

    def authenticate(self, key: str) -> str | None:
        """The environment a secret key belongs to, or None."""
        digest = hash_key(key)
        env_id = self._by_hash.get(digest)
        if env_id is None:
            with self.db.connect() as c:
                rows = c.execute(sa.select(environments.c.id, environments.c.key_hash)).all()
            # Compare every stored hash in constant time rather than looking the digest up by value.
            env_id = next((row.id for row in rows if hmac.compare_digest(row.key_hash, digest)), None)
            if env_id is not None:
                self._by_hash[digest] = env_id
        return env_id

    def ids(self) -> list[str]:
        with self.db.connect() as c:
            return list(c.execute(sa.select(environments.c.id).order_by(environments.c.id)).scalars())
