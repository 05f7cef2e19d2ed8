"""The framework-neutral core of the adapters (FastAPI, Flask, Django, Lambda, Supabase, Vercel).

Framework adapters convert their requests to `AdapterRequest`, call `AdapterEndpoints.handle`,
and convert the `AdapterResponse` back. Receivers mount extra routes with
`AdapterEndpoints.add_route` and check signatures with `verify_signature`.
"""

from ._asgi import standalone_app
from ._bridge import SyncBridge
from ._endpoints import AdapterEndpoints, Handler, headers_of
from ._facade import AppClient, AsyncAppClient
from ._http import AdapterRequest, AdapterResponse, error_response, json_response
from ._settings import DEFAULT_PREFIX, AdapterSettings, WebhookRoute
from ._webhooks import WebhookSignatureError, sign_webhook, verify_signature

__all__ = [
    "DEFAULT_PREFIX",
    "AdapterEndpoints",
    "AdapterRequest",
    "AdapterResponse",
    "AdapterSettings",
    "AppClient",
    "AsyncAppClient",
    "Handler",
    "SyncBridge",
    "WebhookRoute",
    "WebhookSignatureError",
    "error_response",
    "headers_of",
    "json_response",
    "sign_webhook",
    "standalone_app",
    "verify_signature",
]
