"""`"outlast.adapters.django"` in INSTALLED_APPS: each installed app's `tasks` module is imported at startup."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class OutlastConfig(AppConfig):
    name = "outlast.adapters.django"
    label = "outlast"
    verbose_name = "outlast"

    def ready(self) -> None:
        # Like Celery's autodiscovery: `@task`s declared in `<app>/tasks.py` register with the SDK, so the
        # web app can trigger them by object and the task processes (which call django.setup()) find them.
        autodiscover_modules("tasks")
        from .conf import outlast_settings

        outlast_settings()  # a malformed OUTLAST dict fails at startup, not on the first trigger
