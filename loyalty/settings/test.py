"""Test settings: production-like (DEBUG off) with fast hashing and a per-process cache.

Settings modules are the one place a wildcard import is the clear choice: this file is the base
settings plus a few overrides.
"""

import os

os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-with-enough-length-for-hmac-sha256")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")

from loyalty.settings.base import *

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Each test process gets its own memory cache so throttling counters never leak between runs.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
CELERY_TASK_ALWAYS_EAGER = True
MIDDLEWARE = [name for name in MIDDLEWARE if not name.startswith("whitenoise")]
