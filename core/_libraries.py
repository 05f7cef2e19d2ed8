"""What a task process does for libraries it knows, so that users need not write these hooks.

- Django (DJANGO_SETTINGS_MODULE set): set up before the tasks are imported; its database
  connections are closed at each task process start and after a restore, and recycled around
  every attempt as Django's own request cycle does (`outlast.adapters.django`).
- SQLAlchemy: engines created while importing hold pools the fork server's children would
  share; each task process drops its copies (`engine.dispose(close=False)`), and after a restore
  every engine drops the connections CRIU brought back closed.

These are registered before the project is imported, so they run before the project's own hooks.
"""

from __future__ import annotations

import gc
import os
import sys
import weakref
from importlib.util import find_spec
from typing import Any

from . import _hooks

_imported_engines: weakref.WeakSet[Any] = weakref.WeakSet()


def before_import() -> None:
    """Register the library hooks, and set Django up when the project is a Django project."""
    _hooks.on_process_start(_dispose_imported_engines)
    _hooks.on_resume(_dispose_every_engine)
    if is_django_project():
        from outlast.adapters.django.connections import recycle_connections

        recycle_connections()
        setup_django()


def is_django_project() -> bool:
    return bool(os.environ.get("DJANGO_SETTINGS_MODULE")) and find_spec("django") is not None


def setup_django() -> None:
    """A Django project's tasks use its models: set Django up first when DJANGO_SETTINGS_MODULE says so."""
    if is_django_project():
        import django

        django.setup()


def after_import() -> None:
    """Remember the SQLAlchemy engines the import created (a fork server does this once for all)."""
    _imported_engines.update(_engines())


def _engines() -> list[Any]:
    if "sqlalchemy" not in sys.modules:
        return []
    from sqlalchemy.engine import Engine

    return [obj for obj in gc.get_objects() if isinstance(obj, Engine)]


def _dispose_imported_engines() -> None:
    for engine in list(_imported_engines):
        engine.dispose(close=False)  # the connections are the fork server's: leave them alone


def _dispose_every_engine() -> None:
    for engine in _engines():
        engine.dispose(close=False)  # restored closed: nothing to say goodbye to
