"""A Django project on PostgreSQL for tests/test_imported_resources.py (database from DJPG_DB_URL)."""

import os
from urllib.parse import urlsplit

_url = urlsplit(os.environ.get("DJPG_DB_URL", "postgresql://postgres@127.0.0.1:5432/test"))
SECRET_KEY = "django-insecure-outlast-tests"
USE_TZ = True
INSTALLED_APPS = ["outlast.adapters.django"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.path.lstrip("/"),
        "USER": _url.username or "",
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or 5432),
    }
}
