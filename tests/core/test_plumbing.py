"""Cross-cutting plumbing: health, throttling, schema, problem rendering, commands."""

import io
import os
from unittest import mock

import pytest
from django.core.management import call_command
from django.test import override_settings
from rest_framework.settings import api_settings
from rest_framework.test import APIClient

from core.api.exceptions import flatten_errors
from core.models import Partner, PartnerAPIKey
from tests.helpers import assert_problem


def test_health_reports_database_and_unconfigured_broker(db):
    response = APIClient().get("/health/")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "not_configured"},
    }


@override_settings(
    CELERY_BROKER_URL="redis://127.0.0.1:1/0", LOYALTY_BROKER_HEALTH_TIMEOUT_SECONDS=0.5
)
def test_health_is_503_when_the_broker_is_down(db):
    response = APIClient().get("/health/")

    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "broker": "down"}


def test_health_is_503_when_the_database_is_down(db):
    with mock.patch("core.api.views._database_ok", return_value=False):
        response = APIClient().get("/health/")

    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "down"


@pytest.fixture
def low_rates():
    rates = {"operator": "3/min", "partner": "3/min", "member": "2/min", "anonymous": "2/min"}
    with mock.patch.dict(api_settings.DEFAULT_THROTTLE_RATES, rates):
        yield


def test_member_is_throttled_with_retry_after(low_rates, member_client):
    statuses = [member_client.get("/api/v1/me/").status_code for _ in range(3)]

    response = member_client.get("/api/v1/me/")

    assert statuses == [200, 200, 429]
    problem = assert_problem(response, 429, "throttled")
    assert int(response["Retry-After"]) >= 1
    assert problem["detail"]


def test_throttling_is_per_client_not_shared(low_rates, make_member):
    from core.api.tokens import member_token_pair

    clients = []
    for external_id in ("t-1", "t-2"):
        client = APIClient()
        token = member_token_pair(make_member(external_id).pk)["access"]
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        clients.append(client)

    first = [clients[0].get("/api/v1/me/").status_code for _ in range(3)]
    second = clients[1].get("/api/v1/me/").status_code

    assert first == [200, 200, 429]
    assert second == 200


def test_the_previous_window_weighs_by_how_much_of_it_the_sliding_window_covers(
    low_rates, member_client
) -> None:
    """2/min: two requests late in one minute, then halfway into the next one counts as one
    (half of two) plus the new request: allowed; one more is refused until the minute ends."""
    minute = 60 * 1_000_000

    def at(seconds: float):
        return mock.patch("core.api.throttles.ClientRateThrottle.timer", return_value=seconds)

    with at(minute + 59):
        assert [member_client.get("/api/v1/me/").status_code for _ in range(2)] == [200, 200]
    with at(minute + 90):
        assert member_client.get("/api/v1/me/").status_code == 200
        refused = member_client.get("/api/v1/me/")
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) == 30


def test_with_redis_the_count_is_one_pipelined_round_trip(
    low_rates, member_client, redis_cache, settings
) -> None:
    from django.core.cache.backends.redis import RedisCache

    settings.LOYALTY_READ_CACHE_SECONDS = 0
    statuses = [member_client.get("/api/v1/me/").status_code for _ in range(3)]

    assert isinstance(redis_cache, RedisCache)
    assert statuses == [200, 200, 429]


def test_default_rates_meet_the_spec():
    rates = api_settings.DEFAULT_THROTTLE_RATES

    assert rates["operator"] == "6000/min"
    assert rates["partner"] == "6000/min"
    assert rates["member"] == "600/min"


def test_openapi_schema_generates_without_warnings(db):
    out = io.StringIO()

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null", stdout=out)


def test_schema_docs_and_redoc_are_served_offline(db):
    client = APIClient()

    schema = client.get("/api/schema/")
    docs = client.get("/api/docs/")
    redoc = client.get("/api/redoc/")

    assert schema.status_code == 200
    assert b"/api/v1/tag-sync/" in schema.content
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content
    assert b"//cdn" not in docs.content
    assert b"https://" not in docs.content.split(b"<body")[0]
    assert redoc.status_code == 200
    assert b"fonts.googleapis" not in redoc.content


def test_unexpected_error_is_a_generic_500_problem(operator_client):
    with mock.patch("members.selectors.member_list_for_actor", side_effect=RuntimeError("secret")):
        response = operator_client.get("/api/v1/members/")

    body = assert_problem(response, 500, "server_error")
    assert "secret" not in response.content.decode()
    assert body["instance"] == "/api/v1/members/"


def test_flatten_errors_gives_paths_and_pointers():
    errors = list(
        flatten_errors({"items": [{}, {"points": ["Too small."]}], "non_field_errors": ["Bad."]})
    )

    assert errors == [
        {
            "attr": "items.1.points",
            "pointer": "#/items/1/points",
            "code": "invalid",
            "detail": "Too small.",
        },
        {"attr": None, "pointer": "#", "code": "invalid", "detail": "Bad."},
    ]


def test_create_partner_prints_key_last_and_stores_only_its_hash(db):
    out, err = io.StringIO(), io.StringIO()

    call_command(
        "create_partner", "Brand CRM", "--scopes", "members:read,tags:write", stdout=out, stderr=err
    )

    key = out.getvalue().strip().splitlines()[-1]
    partner = Partner.objects.get(name="Brand CRM")
    assert partner.namespace == "brand-crm"
    assert partner.scopes == ["members:read", "tags:write"]
    stored = PartnerAPIKey.objects.get(partner=partner)
    assert key not in (stored.hashed_key, stored.id)
    assert PartnerAPIKey.objects.get_from_key(key) == stored


def test_create_partner_rejects_unknown_scope(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="Unknown scopes: points:steal"):
        call_command(
            "create_partner",
            "Bad",
            "--scopes",
            "points:steal",
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )

    assert not Partner.objects.exists()


def test_seed_demo_is_idempotent_and_prints_working_credentials(db):
    from members.models import Member, MemberDailyActivity

    seed = ("seed_demo", "--members", "5", "--history-members", "30")
    call_command(*seed, stdout=io.StringIO(), stderr=io.StringIO())
    out = io.StringIO()
    call_command(*seed, stdout=out, stderr=io.StringIO())

    assert Member.objects.filter(external_id__startswith="demo-").count() == 5
    # The community's past: members with weeks of activity, assessed under the ladder once.
    history = Member.objects.filter(external_id__startswith="history-")
    assert history.count() == 30
    assert history.exclude(tier="basic").exists()
    assert MemberDailyActivity.objects.filter(member__in=history).exists()
    key = out.getvalue().split("all scopes):")[1].split()[0]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert client.get("/api/v1/members/").status_code == 200
    login = APIClient().post(
        "/api/v1/auth/token/", {"username": "operator", "password": "operator-demo-password"}
    )
    assert login.status_code == 200
    member_login = APIClient().post(
        "/api/v1/auth/token/", {"username": "member", "password": "member-demo-password"}
    )
    assert member_login.status_code == 200


def test_purge_removes_only_old_idempotency_records(db):
    from datetime import timedelta

    from django.utils import timezone

    from core.models import IdempotencyRecord
    from core.services import idempotency_records_purge

    now = timezone.now()
    for hours, key in ((25, "old"), (1, "new")):
        IdempotencyRecord.objects.create(
            owner="o",
            key=key,
            method="POST",
            path="/",
            fingerprint="f",
            response_status=201,
            created_at=now - timedelta(hours=hours),
        )

    deleted = idempotency_records_purge(at=now, retention=timedelta(hours=24))

    assert deleted == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]


def test_schedules_sync_keeps_operator_edits(db):
    from django_celery_beat.models import PeriodicTask

    from core.schedules import SCHEDULES, schedules_sync

    assert schedules_sync() == len(SCHEDULES)
    PeriodicTask.objects.filter(name=SCHEDULES[0].name).update(enabled=False)

    assert schedules_sync() == 0
    assert PeriodicTask.objects.get(name=SCHEDULES[0].name).enabled is False


@pytest.mark.parametrize("namespace", ["system", "member", "operator"])
def test_reserved_namespaces_cannot_belong_to_a_partner(db, namespace):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="cannot be a partner namespace"):
        call_command(
            "create_partner",
            "X",
            "--namespace",
            namespace,
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )

    assert not Partner.objects.exists()


def _lock_wait_errors() -> list[Exception]:
    """The errors PostgreSQL raises when a transaction loses a wait for a lock: a lock timeout,
    then a deadlock (two transactions locking two rows in opposite orders)."""
    import threading

    from django.db import OperationalError, connection, connections, transaction

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS lock_probe (id int PRIMARY KEY)")
        cursor.execute("INSERT INTO lock_probe VALUES (1), (2) ON CONFLICT DO NOTHING")
    errors: list[Exception] = []
    both_hold = threading.Barrier(2)

    def lock(first: int, second: int, *, timeout_ms: int) -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = {timeout_ms}")
                cursor.execute("SELECT 1 FROM lock_probe WHERE id = %s FOR UPDATE", [first])
                both_hold.wait()
                cursor.execute("SELECT 1 FROM lock_probe WHERE id = %s FOR UPDATE", [second])
        except OperationalError as error:
            errors.append(error)
        finally:
            connections.close_all()

    for timeouts in ((50, 60_000), (60_000, 60_000)):  # a lock timeout, then a deadlock
        both_hold.reset()
        threads = [
            threading.Thread(target=lock, args=(1, 2), kwargs={"timeout_ms": timeouts[0]}),
            threading.Thread(target=lock, args=(2, 1), kwargs={"timeout_ms": timeouts[1]}),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE lock_probe")
    return errors


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_lost_lock_wait_is_a_retryable_503_busy():
    from core.api.exceptions import problem_exception_handler
    from core.db import is_lock_wait_lost

    errors = _lock_wait_errors()

    assert [error.__cause__.sqlstate for error in errors] == ["55P03", "40P01"]
    assert all(is_lock_wait_lost(error) for error in errors)
    for error in errors:
        response = problem_exception_handler(error, {"request": None})
        assert (response.status_code, response.data["code"]) == (503, "busy")
        assert response["Retry-After"] == "1"


def test_a_worker_loads_the_urlconf_at_start_and_freezes_it_out_of_the_collectors_scans():
    import subprocess
    import sys

    probe = (
        "import gc, sys; import loyalty.wsgi; "
        "print(gc.get_freeze_count() > 0, 'rewards.api.views' in sys.modules)"
    )
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    result = subprocess.run(  # noqa: S603 - a fixed command line
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**environment, "DJANGO_SETTINGS_MODULE": "loyalty.settings.base"},
    )

    assert result.stdout.split() == ["True", "True"]
