"""Settings of the Django example: an order form whose receipts are sent by outlast tasks."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-example-only")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "orders",
    "outlast.adapters.django",  # autodiscovers orders/tasks.py; `manage.py outlast ...`
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
ASGI_APPLICATION = "mysite.asgi.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",  # the task processes run in this folder too, so they share it
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

OUTLAST = {
    # Unset keys fall back to OUTLAST_API_URL, OUTLAST_SECRET_KEY, OUTLAST_WEBHOOK_SECRET.
    "API_URL": os.environ.get("OUTLAST_API_URL", "http://127.0.0.1:7070"),
    "TIMEOUT": 5,
}
