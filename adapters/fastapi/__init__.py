"""Outlast for FastAPI: `outlast = Outlast(app)`, then `client: OutlastClient = Depends(outlast.client)`."""

from ._extension import Outlast, OutlastClient, SyncOutlastClient, TraceMiddleware, install

__all__ = ["Outlast", "OutlastClient", "SyncOutlastClient", "TraceMiddleware", "install"]
