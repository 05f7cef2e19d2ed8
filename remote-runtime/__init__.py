"""The outlast runtime: HTTP API, run engine, worker supervisor. Import only on the server side."""

from .settings import RuntimeSettings

__all__ = ["RuntimeSettings"]
