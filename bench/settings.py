"""Benchmark settings: the production-like base settings on PostgreSQL, plus the reference route.

Settings modules are the one place a wildcard import is the clear choice: this file is the base
settings plus a few overrides. Throttle rates are raised so that throttling is not what is measured
(the throttle classes still run, for the award endpoint and the reference alike).
"""

import os

from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-with-enough-length-for-hmac-sha256")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1")
# Plain HTTP on the loopback: no redirect to https.
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")

from loyalty.settings.base import *  # noqa: F403

if not IS_POSTGRES:  # noqa: F405
    raise ImproperlyConfigured(
        "The benchmark needs PostgreSQL: set DATABASE_URL, e.g. "
        "postgres://postgres@127.0.0.1:5432/loyalty_bench"
    )

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
ROOT_URLCONF = "bench.urls"

REST_FRAMEWORK = {
    **REST_FRAMEWORK,  # noqa: F405
    "DEFAULT_THROTTLE_RATES": dict.fromkeys(
        REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],  # noqa: F405
        "10000000/min",
    ),
}
