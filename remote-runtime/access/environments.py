"""Environments (dev, prod) and their secret keys, which are stored only as SHA-256 hashes.

A rotation gives an environment a new key and keeps the one it replaces working for a grace
period (see outlast.wire.keys), so web apps and workers can move over without an outage. Only one
previous key is kept: rotating again ends the older one at once. Its hash stays after the grace
period so that a late caller is told why its key stopped working.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from outlast._errors import ConfigurationError

from ..store.schema import environments

DEFAULT_ENVIRONMENTS = ("dev", "prod")
MIN_KEY_LENGTH = 16
# How long a process trusts what it read about a key: a rotation on another replica of the runtime
# (same database) reaches this one within that time.
CACHE_SECONDS = 5.0


def hash_key(key: str) -> str:
    # Keys are 32 random bytes: a fast hash is enough; nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(env_id: str) -> str:
    return f"ol_{env_id}_{secrets.token_urlsafe(32)}"


def _moment(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Rotation:
    env_id: str
    key: str
    rotated_at: float
    previous_key_expires_at: float


@dataclass(frozen=True)
class _Known:
    env_id: str
    valid_until: float  # wall clock; inf for a current key
    read_at: float  # monotonic


class RotationRefused(Exception):
    """The key presented may not rotate that environment's key; the message says why."""


class Environments:
    def __init__(self, db: object) -> None:
        self.db = db
        self._by_hash: dict[str, _Known] = {}

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
        """The environment a secret key belongs to (its current key, or the one it replaced while that
        is in its grace period), or None."""
        fresh, env_id = self.cached(key)
        if fresh:
            return env_id
        known = self._look_up(hash_key(key))
        return known.env_id if known is not None and time.time() < known.valid_until else None

    def cached(self, key: str) -> tuple[bool, str | None]:
        """(True, what `authenticate` answers) when this process read the key recently; (False, None) when
        the store must be asked. No I/O: an event loop may call it."""
        known = self._by_hash.get(hash_key(key))
        if known is None or time.monotonic() - known.read_at > CACHE_SECONDS:
            return False, None
        return True, known.env_id if time.time() < known.valid_until else None

    def _look_up(self, digest: str) -> _Known | None:
        with self.db.connect() as c:
            rows = c.execute(sa.select(environments.c.id, environments.c.key_hash, environments.c.previous_key_hash,
                                       environments.c.previous_key_expires_at)).all()
        known = None
        # Compare every stored hash in constant time rather than looking the digest up by value.
        for row in rows:
            if hmac.compare_digest(row.key_hash, digest):
                known = _Known(row.id, math.inf, time.monotonic())
            elif row.previous_key_hash and hmac.compare_digest(row.previous_key_hash, digest):
                known = _Known(row.id, row.previous_key_expires_at or 0.0, time.monotonic())
        if known is None:
            self._by_hash.pop(digest, None)
        else:
            self._by_hash[digest] = known
        return known

    def refusal(self, key: str) -> str:
        """Why `key` is refused: a replaced key whose grace period ended is told so."""
        digest = hash_key(key)
        with self.db.connect() as c:
            rows = c.execute(sa.select(environments.c.id, environments.c.previous_key_hash,
                                       environments.c.previous_key_expires_at, environments.c.key_rotated_at)
                             .where(environments.c.previous_key_hash.is_not(None))).all()
        for row in rows:
            if hmac.compare_digest(row.previous_key_hash, digest) and row.previous_key_expires_at is not None:
                return (f"this secret key of environment {row.id!r} was replaced by a key rotation at "
                        f"{_moment(row.key_rotated_at or row.previous_key_expires_at)} and stopped working at "
                        f"{_moment(row.previous_key_expires_at)}: use the environment's new key")
        return "invalid secret key"

    def rotate(self, env_id: str, presented: str, grace: float) -> Rotation:
        """Give `env_id` a new key; `presented` (its current key) keeps working for `grace` seconds.

        Only the current key may rotate: a replaced key still in its grace period could otherwise
        take the environment over from whoever holds the new one.
        """
        digest = hash_key(presented)
        key = new_key(env_id)
        now = time.time()
        with self.db.begin() as c:
            # Conditional on the presented key still being current: of two rotations at once, one wins.
            done = c.execute(environments.update()
                             .where(environments.c.id == env_id, environments.c.key_hash == digest)
                             .values(key_hash=hash_key(key), key_hint=key[-4:], previous_key_hash=digest,
                                     previous_key_expires_at=now + grace, key_rotated_at=now)).rowcount
        if not done:
            owner = self.authenticate(presented)
            if owner == env_id:
                raise RotationRefused(f"this key of environment {env_id!r} was already replaced by a rotation and "
                                      "only works until its grace period ends: rotate with the current key")
            raise RotationRefused(f"a key of environment {owner!r} cannot rotate the key of environment {env_id!r}")
        self._by_hash.clear()  # what this process read about either key is stale
        return Rotation(env_id, key, now, now + grace)

    def ids(self) -> list[str]:
        with self.db.connect() as c:
            return list(c.execute(sa.select(environments.c.id).order_by(environments.c.id)).scalars())
