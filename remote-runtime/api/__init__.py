"""The HTTP API: the FastAPI app and its routers, one module per resource."""

from .app import create_app

__all__ = ["create_app"]
