"""outlast in a Django project.

    INSTALLED_APPS = [..., "outlast.adapters.django"]      # autodiscovers each app's tasks.py
    OUTLAST = {"API_URL": ..., "SECRET_KEY": ...}          # else OUTLAST_API_URL / OUTLAST_SECRET_KEY
    urlpatterns = [..., path("outlast/", include("outlast.adapters.django.urls"))]

    from outlast.adapters.django import trigger_on_commit
    with transaction.atomic():
        order = Order.objects.create(...)
        trigger_on_commit(fulfil_order, {"order_id": order.id})   # sent after COMMIT, never on rollback

`python manage.py outlast dev|worker|deploy|runs|trigger` runs the CLI with the settings loaded;
task processes set Django up before importing tasks, so task code can use the ORM.
"""

from ._on_commit import PendingBatch, PendingRun, batch_trigger_on_commit, trigger_on_commit
from .conf import endpoints, outlast_settings

__all__ = ["PendingBatch", "PendingRun", "batch_trigger_on_commit", "endpoints", "outlast_settings",
           "trigger_on_commit"]
