"""The `OUTLAST` settings dict, with the OUTLAST_* environment variables as fallback.

    OUTLAST = {
        "API_URL": "https://outlast.internal:7070",   # else OUTLAST_API_URL
        "SECRET_KEY": env("OUTLAST_SECRET_KEY"),       # else OUTLAST_SECRET_KEY
        "PREFIX": "/outlast",                          # where urls.py is included (for messages)
        "TIMEOUT": 5,                                  # seconds a trigger may take inside a request
        "WEBHOOK_SECRET": ..., "WEBHOOK_SECRET_PREVIOUS": ..., "WEBHOOK_TOLERANCE": 300,
    }
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import fields

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from outlast._adapter import AdapterEndpoints, AdapterSettings
from outlast._errors import ConfigurationError

__all__ = ["KEYS", "endpoints", "outlast_settings"]

# Every setting the adapter core reads: the client's three, and the adapter's own fields.
KEYS = frozenset({"API_URL", "SECRET_KEY", "TIMEOUT", "WEBHOOK_SECRET_PREVIOUS"} | {
    field.name.upper() for field in fields(AdapterSettings) if field.name not in ("client", "webhook_previous_secret")})

_lock = threading.Lock()
_endpoints: AdapterEndpoints | None = None


def outlast_settings() -> AdapterSettings:
    """`settings.OUTLAST`, checked; a missing key falls back to its OUTLAST_* environment variable."""
    config = getattr(settings, "OUTLAST", None) or {}
    if not isinstance(config, Mapping):
        raise ImproperlyConfigured(f"settings.OUTLAST must be a dict, got {type(config).__name__}")
    unknown = sorted(set(config) - KEYS)
    if unknown:
        raise ImproperlyConfigured(f"settings.OUTLAST has unknown key(s) {', '.join(unknown)}; "
                                   f"known: {', '.join(sorted(KEYS))}")
    try:
        return AdapterSettings.from_mapping({f"OUTLAST_{key}": value for key, value in config.items()})
    except ConfigurationError as exc:
        raise ImproperlyConfigured(f"settings.OUTLAST: {exc}") from None


def endpoints() -> AdapterEndpoints:
    """The project's adapter endpoints (and clients), built from the settings on first use.

    Mount receivers on it, e.g. `outlast.adapters.supabase.mount(endpoints())`, and declare
    signed webhooks with `endpoints().webhook(name, task)`, in an AppConfig.ready().
    """
    global _endpoints
    with _lock:
        if _endpoints is None:
            _endpoints = AdapterEndpoints(outlast_settings())
        return _endpoints


@receiver(setting_changed)
def _forget(setting: str, **kwargs: object) -> None:
    # override_settings(OUTLAST=...) in tests: build the endpoints again from the new settings.
    global _endpoints
    if setting == "OUTLAST":
        with _lock:
            if _endpoints is not None:
                _endpoints.close()
            _endpoints = None
