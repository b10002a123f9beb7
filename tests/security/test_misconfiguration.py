"""OWASP API8 (security misconfiguration): with production-style environment variables the
deployment checklist is clean; without configuration the WSGI application refuses to start
rather than run with DEBUG or a guessable key; DEBUG is switched on only by `make run` (the
demo); the secure settings, headers and error bodies hold outside DEBUG."""

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from rest_framework.test import APIClient

from tests.helpers import assert_problem

BASE_DIR = Path(settings.BASE_DIR)
PRODUCTION_ENV = {
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(64),
    "ALLOWED_HOSTS": "api.example.com",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/loyalty_deploy_check",
    "REDIS_URL": "redis://127.0.0.1:6379/5",
}


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run Python in a clean environment (nothing of this test process's settings leaks in)."""
    clean = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(BASE_DIR)),
        # No .env either: a developer's local one must not configure what is checked here.
        "ENV_FILE": str(BASE_DIR / "tests" / "security" / "no-such.env"),
    }
    return subprocess.run(  # noqa: S603 - our own interpreter and manage.py
        [sys.executable, *args],
        cwd=BASE_DIR,
        env={**clean, "DJANGO_SETTINGS_MODULE": "loyalty.settings.base", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_is_clean_with_production_settings():
    result = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], PRODUCTION_ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_wsgi_application_refuses_to_start_unconfigured():
    result = _run(["-c", "import loyalty.wsgi"], {})

    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_production_defaults_are_secure():
    script = (
        "import json; from django.conf import settings as s; import django; django.setup();"
        "print(json.dumps({"
        "'debug': s.DEBUG, 'ssl_redirect': s.SECURE_SSL_REDIRECT,"
        "'hsts': s.SECURE_HSTS_SECONDS, 'session_secure': s.SESSION_COOKIE_SECURE,"
        "'csrf_secure': s.CSRF_COOKIE_SECURE, 'nosniff': s.SECURE_CONTENT_TYPE_NOSNIFF,"
        "'renderers': s.REST_FRAMEWORK['DEFAULT_RENDERER_CLASSES'],"
        "'cors': s.CORS_ALLOWED_ORIGINS, 'webhook_http': s.LOYALTY_WEBHOOK_ALLOW_HTTP,"
        "'webhook_private': s.LOYALTY_WEBHOOK_ALLOW_PRIVATE_TARGETS,"
        "'jwt_minutes': s.SIMPLE_JWT['ACCESS_TOKEN_LIFETIME'].total_seconds() / 60,"
        "'credential_url': s.LOYALTY_CREDENTIAL_BASE_URL}))"
    )
    env = {"SECRET_KEY": PRODUCTION_ENV["SECRET_KEY"], "ALLOWED_HOSTS": "api.example.com"}

    result = _run(["-c", script], env)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "debug": False,
        "ssl_redirect": True,
        "hsts": 31536000,
        "session_secure": True,
        "csrf_secure": True,
        "nosniff": True,
        "renderers": ["core.api.renderers.JSONRenderer"],
        "cors": [],
        "webhook_http": False,
        "webhook_private": False,
        "jwt_minutes": 15.0,
        "credential_url": "https://api.example.com",
    }


def test_only_make_run_switches_debug_on():
    makefile = (BASE_DIR / "Makefile").read_text()
    example = (BASE_DIR / ".env.example").read_text()

    debug_targets = re.findall(r"^([\w-]+): export DEBUG \?= true$", makefile, re.MULTILINE)

    # lint and schema only generate the schema; run is the demo server.
    assert set(debug_targets) <= {"run", "lint", "schema"}
    assert "run" in debug_targets
    assert re.search(r"^DEBUG=false$", example, re.MULTILINE)


def test_the_test_settings_run_with_debug_off():
    assert settings.DEBUG is False
    assert "rest_framework.renderers.BrowsableAPIRenderer" not in str(settings.REST_FRAMEWORK)


def test_secure_headers_are_sent(db):
    response = APIClient().get("/health/", secure=True)

    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")
    assert response["Referrer-Policy"] == "same-origin"


def test_an_unknown_path_is_a_plain_problem_not_a_debug_page(operator_client):
    response = operator_client.get("/api/v1/no-such-thing/")

    assert_problem(response, 404)
    assert b"urlpatterns" not in response.content
    assert b"Traceback" not in response.content


def test_unknown_hosts_are_refused(db):
    response = APIClient().get("/health/", HTTP_HOST="evil.example.net")

    assert response.status_code == 400
