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
# The cached read documents stay on with it: tasks run in the test's own process, so every
# write reaches the cache that serves the next read, and every test that writes and then reads
# `me/` or a member's tier checks that the write replaced the documents.
LOYALTY_READ_CACHE_SECONDS = 30
# Tasks run inline, except in the subprocess workers of the real-broker tests
# (tests/core/test_webhooks_worker.py), which isolate their queues under a per-run key prefix.
CELERY_TASK_ALWAYS_EAGER = not os.environ.get("LOYALTY_TEST_REAL_BROKER")
if os.environ.get("LOYALTY_TEST_BROKER_PREFIX"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        **CELERY_BROKER_TRANSPORT_OPTIONS,
        "global_keyprefix": os.environ["LOYALTY_TEST_BROKER_PREFIX"],
    }
MIDDLEWARE = [name for name in MIDDLEWARE if not name.startswith("whitenoise")]
