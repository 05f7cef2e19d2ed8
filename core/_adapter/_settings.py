"""Adapter settings from a framework's config (Flask `app.config`, Django `settings`) or the environment,
and the webhooks an app accepts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from outlast._client import AsyncClient, Client
from outlast._config import ClientSettings, from_env
from outlast._errors import ConfigurationError
from outlast._offload import DEFAULT_THRESHOLD as DEFAULT_OFFLOAD_THRESHOLD

__all__ = ["DEFAULT_PREFIX", "DEFAULT_WEBHOOK_TOLERANCE", "AdapterSettings", "WebhookRoute"]

DEFAULT_PREFIX = "/outlast"
DEFAULT_WEBHOOK_TOLERANCE = 300.0  # seconds a signed webhook stays acceptable
DEFAULT_ADAPTER_TIMEOUT = 5.0  # a web request must not wait long for a trigger
DEFAULT_ADAPTER_RETRY_FOR = 5.0  # nor retry for the client's 30 s while the runtime is away: it answers 503 sooner


@dataclass(frozen=True)
class AdapterSettings:
    client: ClientSettings
    prefix: str = DEFAULT_PREFIX
    webhook_secret: str | None = None
    webhook_previous_secret: str | None = None
    webhook_tolerance: float = DEFAULT_WEBHOOK_TOLERANCE
    offload_bucket: str | None = None
    offload_threshold: int = DEFAULT_OFFLOAD_THRESHOLD

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any], **overrides: Any) -> AdapterSettings:
        """Settings from `OUTLAST_*` keys of `config`, then the same environment variables.

        Keys: OUTLAST_API_URL, OUTLAST_SECRET_KEY, OUTLAST_TIMEOUT (seconds; 5 by default for
        adapters, since a trigger runs inside a web request), OUTLAST_RETRY_FOR (seconds a call is
        retried while the runtime is unreachable or answers 503; 5 by default for adapters, 0: no
        retries), OUTLAST_PREFIX, OUTLAST_WEBHOOK_SECRET,
        OUTLAST_WEBHOOK_SECRET_PREVIOUS (the old key while rotating), OUTLAST_WEBHOOK_TOLERANCE,
        OUTLAST_OFFLOAD_BUCKET (payloads over OUTLAST_OFFLOAD_THRESHOLD bytes, 256 KiB, go through S3).
        Keyword overrides (`api_url=`, `secret_key=`, `prefix=`, ...) win over both.
        """

        def get(name: str) -> Any:
            key = name.lower()
            if overrides.get(key) is not None:
                return overrides[key]
            value = config.get(f"OUTLAST_{name}")
            return value if value not in (None, "") else os.environ.get(f"OUTLAST_{name}") or None

        unknown = set(overrides) - {"api_url", "secret_key", "timeout", "retry_for", "prefix", "webhook_secret",
                                    "webhook_secret_previous", "webhook_tolerance", "offload_bucket",
                                    "offload_threshold"}
        if unknown:
            raise ConfigurationError(f"unknown outlast setting(s): {', '.join(sorted(unknown))}")
        timeout = get("TIMEOUT")
        retry_for = get("RETRY_FOR")
        client = from_env(get("API_URL"), get("SECRET_KEY"), _seconds(timeout, "OUTLAST_TIMEOUT")
                          if timeout is not None else DEFAULT_ADAPTER_TIMEOUT,
                          retry_for=DEFAULT_ADAPTER_RETRY_FOR if retry_for is None else retry_for)
        prefix = "/" + str(get("PREFIX") or DEFAULT_PREFIX).strip("/")
        tolerance = get("WEBHOOK_TOLERANCE")
        threshold = get("OFFLOAD_THRESHOLD")
        return cls(
            client=client,
            prefix="" if prefix == "/" else prefix,
            webhook_secret=get("WEBHOOK_SECRET"),
            webhook_previous_secret=get("WEBHOOK_SECRET_PREVIOUS"),
            webhook_tolerance=DEFAULT_WEBHOOK_TOLERANCE if tolerance is None
            else _seconds(tolerance, "OUTLAST_WEBHOOK_TOLERANCE"),
            offload_bucket=get("OFFLOAD_BUCKET"),
            offload_threshold=DEFAULT_OFFLOAD_THRESHOLD if threshold is None
            else int(_seconds(threshold, "OUTLAST_OFFLOAD_THRESHOLD")),
        )

    def make_client(self) -> Client:
        return Client(self.client.api_url, self.client.secret_key, timeout=self.client.timeout,
                      retry_for=self.client.retry_for)

    def make_async_client(self) -> AsyncClient:
        return AsyncClient(self.client.api_url, self.client.secret_key, timeout=self.client.timeout,
                           retry_for=self.client.retry_for)


def _seconds(value: Any, name: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}") from None
    if not seconds > 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    return seconds


@dataclass(frozen=True)
class WebhookRoute:
    """One signed webhook an app accepts: its name, the task it triggers, and the secrets that sign it."""

    name: str
    task: str
    secrets: tuple[str, ...]
