"""The read replica for analytics: settings, the router, and real routing on PostgreSQL."""

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from django.test import override_settings

from core.db_router import PRIMARY, REPLICA, PrimaryReplicaRouter, analytics_database
from members.models import Member
from tests.integration.processes import BASE_DIR
from tests.workers import database_url

ROUTER = PrimaryReplicaRouter()


def _settings_in_subprocess(script: str, **env: str) -> tuple[int, str]:
    """Run ``script`` after loading the production settings with ``env``; its last line."""
    environment = {
        **{
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("DATABASE", "LOYALTY_", "DB_", "DJANGO"))
        },
        "DJANGO_SETTINGS_MODULE": "loyalty.settings.base",
        "DEBUG": "true",
        **env,
    }
    result = subprocess.run(  # noqa: S603 - a fixed command line
        [sys.executable, "-c", f"import django\ndjango.setup()\n{script}"],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = (result.stdout or result.stderr).strip().splitlines()
    return result.returncode, lines[-1] if lines else ""


SHOW_SETTINGS = """
import json
from django.conf import settings
print(json.dumps({
    "aliases": sorted(settings.DATABASES),
    "analytics": settings.LOYALTY_ANALYTICS_DATABASE,
    "routers": settings.DATABASE_ROUTERS,
    "replica_test": settings.DATABASES.get("replica", {}).get("TEST", {}).get("MIRROR"),
    "pool": {alias: db["OPTIONS"].get("pool") for alias, db in settings.DATABASES.items()},
    "conn_max_age": {alias: db["CONN_MAX_AGE"] for alias, db in settings.DATABASES.items()},
}))
"""
PRIMARY_URL = "postgres://postgres@db-primary:5432/loyalty"
REPLICA_URL = "postgres://postgres@db-replica:5432/loyalty"


def test_without_a_replica_analytics_read_the_primary() -> None:
    code, line = _settings_in_subprocess(SHOW_SETTINGS, DATABASE_URL=PRIMARY_URL)

    assert code == 0, line
    shown = json.loads(line)
    assert (shown["aliases"], shown["analytics"]) == (["default"], "default")
    assert shown["routers"] == ["core.db_router.PrimaryReplicaRouter"]


def test_a_replica_url_adds_the_replica_and_analytics_read_it() -> None:
    code, line = _settings_in_subprocess(
        SHOW_SETTINGS, DATABASE_URL=PRIMARY_URL, DATABASE_REPLICA_URL=REPLICA_URL
    )

    assert code == 0, line
    shown = json.loads(line)
    assert (shown["aliases"], shown["analytics"]) == (["default", "replica"], "replica")
    # Tests see the replica as the primary itself (no second test database).
    assert shown["replica_test"] == "default"
    assert shown["pool"] == {"default": None, "replica": None}


def test_analytics_on_a_replica_that_is_not_configured_stops_start_up() -> None:
    code, line = _settings_in_subprocess(
        SHOW_SETTINGS, DATABASE_URL=PRIMARY_URL, LOYALTY_ANALYTICS_DATABASE="replica"
    )

    assert code != 0
    assert "ImproperlyConfigured" in line
    assert "LOYALTY_ANALYTICS_DATABASE='replica'" in line


def test_db_pool_gives_every_postgres_database_a_pool_and_no_persistent_connections() -> None:
    code, line = _settings_in_subprocess(
        SHOW_SETTINGS,
        DATABASE_URL=PRIMARY_URL,
        DATABASE_REPLICA_URL=REPLICA_URL,
        DB_POOL="true",
        DB_POOL_MAX_SIZE="4",
    )

    assert code == 0, line
    shown = json.loads(line)
    expected = {"min_size": 2, "max_size": 4, "timeout": 5.0}
    assert shown["pool"] == {"default": expected, "replica": expected}
    assert shown["conn_max_age"] == {"default": 0, "replica": 0}


@pytest.mark.parametrize(
    ("configured", "expected"), [("default", "default"), ("replica", "replica")]
)
def test_analytics_database_follows_the_setting(configured: str, expected: str) -> None:
    with override_settings(LOYALTY_ANALYTICS_DATABASE=configured):
        assert analytics_database() == expected


def test_the_router_writes_and_migrates_only_on_the_primary() -> None:
    assert ROUTER.db_for_write(Member) == PRIMARY
    assert ROUTER.db_for_read(Member) is None  # the primary unless asked for the replica
    assert ROUTER.allow_migrate(PRIMARY, "members", "member")
    assert not ROUTER.allow_migrate(REPLICA, "members", "member")


def test_the_router_allows_relations_between_primary_and_replica_rows() -> None:
    on_primary, on_replica, elsewhere = Member(), Member(), Member()
    on_primary._state.db, on_replica._state.db, elsewhere._state.db = PRIMARY, REPLICA, "other"

    assert ROUTER.allow_relation(on_primary, on_replica) is True
    assert ROUTER.allow_relation(on_primary, elsewhere) is None


ROUTING_SCRIPT = """
import json
from django.db import connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from core.actors import system_actor
from core.db_router import analytics_database
from members.models import Member
from members.services import member_create
created = member_create(external_id="routed-1", display_name="Routed",
                        actor=system_actor("tests"), at=timezone.now())
with CaptureQueriesContext(connections["replica"]) as replica_queries, \\
        CaptureQueriesContext(connections["default"]) as primary_queries:
    read = Member.objects.using(analytics_database()).get(pk=created.pk)
    read_queries = (len(replica_queries), len(primary_queries))
    read_db = read._state.db
    read.display_name = "Renamed"
    read.save(update_fields=["display_name"])
    write_queries = (len(replica_queries) - read_queries[0],
                     len(primary_queries) - read_queries[1])
print(json.dumps({
    "read_db": read_db,
    "written_db": read._state.db,
    "read": read_queries,
    "write": write_queries,
    "name": Member.objects.get(pk=created.pk).display_name,
    "pooled": [connections[alias].pool is not None for alias in ("default", "replica")],
}))
"""


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_analytics_reads_go_to_the_replica_and_writes_to_the_primary(settings: Any) -> None:
    # The "replica" is a second connection to the test database: what matters is which
    # connection each query takes, with the pool on as in a pooled deployment.
    code, line = _settings_in_subprocess(
        ROUTING_SCRIPT,
        DATABASE_URL=database_url(),
        DATABASE_REPLICA_URL=database_url(),
        DB_POOL="true",
    )

    assert code == 0, line
    shown = json.loads(line)
    assert (shown["read_db"], shown["written_db"]) == ("replica", "default")
    assert shown["read"] == [1, 0]
    assert shown["write"][0] == 0
    assert shown["write"][1] >= 1
    assert shown["name"] == "Renamed"
    assert shown["pooled"] == [True, True]
    assert Member.objects.get(external_id="routed-1").display_name == "Renamed"
