"""Outlast for Flask: `Outlast(app)` / `init_app`, `current_app.extensions["outlast"]`, a blueprint of endpoints."""

from ._extension import Outlast, OutlastState, blueprint

__all__ = ["Outlast", "OutlastState", "blueprint"]
