"""A small Django project for tests/adapters/test_django.py. The database file comes from DJSHOP_DB so that
the test and the task processes of its runtime share it."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "django-insecure-outlast-tests"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = ["shop", "outlast.adapters.django"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware", "django.middleware.csrf.CsrfViewMiddleware"]
ROOT_URLCONF = "djshop.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJSHOP_DB", str(BASE_DIR / "db.sqlite3")),
        "OPTIONS": {"timeout": 30},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# API_URL and SECRET_KEY come from OUTLAST_API_URL / OUTLAST_SECRET_KEY.
OUTLAST = {"WEBHOOK_SECRET": "whsec_djshop"}
