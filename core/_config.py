"""Client settings, from arguments first and the environment second."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ._errors import ConfigurationError

API_URL_ENV = "OUTLAST_API_URL"
SECRET_KEY_ENV = "OUTLAST_SECRET_KEY"
TIMEOUT_ENV = "OUTLAST_TIMEOUT"
RETRY_FOR_ENV = "OUTLAST_RETRY_FOR"

DEFAULT_API_URL = "http://127.0.0.1:7070"
DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRY_FOR = 30.0  # seconds a repeatable call is retried while the runtime answers 503 or is unreachable
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class ClientSettings:
    """Where the runtime is, how to authenticate, and how long to wait for it."""

    api_url: str = DEFAULT_API_URL
    secret_key: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    retry_for: float = DEFAULT_RETRY_FOR

    def require_secret_key(self) -> str:
        """The secret key, or a `ConfigurationError` that says how to set it."""
        if not self.secret_key:
            raise ConfigurationError(
                f"no secret key: set {SECRET_KEY_ENV} to the secret key of your outlast environment "
                "(or pass it explicitly)"
            )
        return self.secret_key


def from_env(
    api_url: str | None = None,
    secret_key: str | None = None,
    timeout: float | None = None,
    *,
    retry_for: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClientSettings:
    """Settings from the arguments given, falling back to the OUTLAST_* environment variables.

    A missing secret key is not an error here, only when a request needs it.
    """
    env = os.environ if environ is None else environ
    url = (api_url or env.get(API_URL_ENV) or DEFAULT_API_URL).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        source = "api_url" if api_url else API_URL_ENV
        raise ConfigurationError(f"{source} must be an http:// or https:// URL, got {url!r}")

    if timeout is None:
        raw = env.get(TIMEOUT_ENV, "").strip()
        try:
            timeout = float(raw) if raw else DEFAULT_TIMEOUT
        except ValueError:
            raise ConfigurationError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
        source = TIMEOUT_ENV
    else:
        source = "timeout"
    if not timeout > 0:
        raise ConfigurationError(f"{source} must be a positive number of seconds, got {timeout!r}")

    key = secret_key if secret_key is not None else env.get(SECRET_KEY_ENV)
    retries = _retry_for(env) if retry_for is None else _checked_retry_for(retry_for, "retry_for")
    return ClientSettings(api_url=url, secret_key=key.strip() if key else None, timeout=float(timeout),
                          retry_for=retries)


def _retry_for(env: Mapping[str, str]) -> float:
    raw = env.get(RETRY_FOR_ENV, "").strip()
    return _checked_retry_for(raw if raw else DEFAULT_RETRY_FOR, RETRY_FOR_ENV)


def _checked_retry_for(value: object, source: str) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ConfigurationError(f"{source} must be a number of seconds (0: no retries), got {value!r}")
    return seconds
