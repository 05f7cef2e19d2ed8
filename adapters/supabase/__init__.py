"""Trigger outlast tasks from Supabase (PostgreSQL) row changes.

    from outlast.adapters.supabase import on_insert

    on_insert("public.orders", task=fulfil_order, when=lambda row: row["status"] == "paid")

Deliveries come from database webhooks (`outlast supabase setup --url ...`) to the receiver,
mounted in an app with `mount(outlast)` (the FastAPI or Flask extension, or Django's
`endpoints()`) or served alone with `asgi_app()`; or, so that no committed change is ever
missed, through an outbox drained by `OutboxDrainer` (`outlast supabase setup --outbox` and
`outlast supabase drain`). Task code reaches the project with `supabase_client()`.
"""

from ._asgi import asgi_app
from ._client import supabase_client
from ._events import EventShapeError, SupabaseEvent, parse_event
from ._outbox import DrainResult, OutboxDrainer
from ._receiver import SECRET_ENV, SECRET_HEADER, SupabaseReceiver, mount
from ._routes import Route, Router, default_router, on_delete, on_insert, on_update
from ._sql import SetupPlan, setup_sql

__all__ = [
    "SECRET_ENV",
    "SECRET_HEADER",
    "DrainResult",
    "EventShapeError",
    "OutboxDrainer",
    "Route",
    "Router",
    "SetupPlan",
    "SupabaseEvent",
    "SupabaseReceiver",
    "asgi_app",
    "default_router",
    "mount",
    "on_delete",
    "on_insert",
    "on_update",
    "parse_event",
    "setup_sql",
    "supabase_client",
]
