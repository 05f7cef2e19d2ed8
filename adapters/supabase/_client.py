"""A Supabase client for task code, from the run's environment variables.

Tasks run on the outlast runtime, not in the web app, so they reach the project's database
through its API with the service role key (which bypasses row level security: keep it in the
runtime's environment, never in a browser).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from outlast._errors import ConfigurationError

if TYPE_CHECKING:
    from supabase import Client as SupabaseClient

__all__ = ["KEY_ENVS", "URL_ENV", "supabase_client"]

URL_ENV = "SUPABASE_URL"
KEY_ENVS = ("SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY")

_lock = threading.Lock()
_clients: dict[tuple[str, str], SupabaseClient] = {}


def supabase_client() -> SupabaseClient:
    """The process's `supabase.Client` for SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_SECRET_KEY).

    Built once per URL and key and reused by later runs in the same task process.
    """
    url = os.environ.get(URL_ENV, "").strip()
    key = next((os.environ[name].strip() for name in KEY_ENVS if os.environ.get(name, "").strip()), "")
    if not url:
        raise ConfigurationError(f"{URL_ENV} is not set: give the runtime your project's URL "
                                 "(https://<ref>.supabase.co), e.g. in [tool.outlast.env]")
    if not key:
        raise ConfigurationError(f"{KEY_ENVS[0]} is not set: give the runtime your project's service role key")
    try:
        from supabase import create_client
    except ImportError:
        raise ConfigurationError("the supabase package is not installed: pip install 'outlast[supabase]'") from None
    with _lock:
        client = _clients.get((url, key))
        if client is None:
            client = _clients[(url, key)] = create_client(url, key)
        return client
