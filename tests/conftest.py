"""Shared fixtures: clients per role, members built through services."""

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from core.actors import system_actor
from core.api.tokens import member_token_pair, operator_token_pair
from core.models import Partner, Scope
from core.services import partner_create
from members.models import Member, MemberDailyActivity
from members.services import member_create
from rewards.models import CertificationGrant
from rewards.services.earning import business_date_of


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``postgres`` need real row locks; they are skipped only on SQLite."""
    from django.conf import settings

    if settings.IS_POSTGRES:
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seeded_data_after_flush(request: pytest.FixtureRequest) -> None:
    """Transactional tests flush every table, data migrations' rows included: seed them again."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction"):
        return
    request.getfixturevalue("transactional_db")
    from django.utils import timezone

    from members.defaults import event_types_seed
    from members.models import EventType
    from rewards.defaults import (
        badges_seed,
        benefits_seed,
        certifications_seed,
        earning_rules_seed,
    )
    from rewards.models import Badge, Benefit, Certification, EarningRule
    from tiers.ladder import ladder_seed, rules_seed
    from tiers.models import RuleSet, Tier, TierRequirement, TierRule

    ladder_seed(Tier)
    rules_seed(RuleSet, TierRule, TierRequirement, at=timezone.now())
    certifications_seed(Certification, at=timezone.now())
    benefits_seed(Benefit, at=timezone.now())
    badges_seed(Badge, at=timezone.now())
    earning_rules_seed(EarningRule, at=timezone.now())
    event_types_seed(EventType, at=timezone.now())


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def make_member(db: Any) -> Callable[..., Member]:
    counter = iter(range(1, 1_000_000))

    def make(external_id: str | None = None, **fields: Any) -> Member:
        return member_create(
            external_id=external_id or f"m-{next(counter):06d}",
            display_name=fields.pop("display_name", "Member"),
            actor=system_actor("tests"),
            at=fields.pop("at", timezone.now()),
            **fields,
        )

    return make


@pytest.fixture
def member(make_member: Callable[..., Member]) -> Member:
    return make_member("member-self", display_name="Self")


@pytest.fixture
def other_member(make_member: Callable[..., Member]) -> Member:
    return make_member("member-other", display_name="Other")


def _bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def anonymous_client() -> APIClient:
    return APIClient()


@pytest.fixture
def member_client(member: Member) -> APIClient:
    return _bearer(member_token_pair(member.pk)["access"])


@pytest.fixture
def superuser(db: Any) -> User:
    return User.objects.create_user(
        "root-op", password="pw-root-op-123", is_staff=True, is_superuser=True
    )


@pytest.fixture
def operator_client(superuser: User) -> APIClient:
    return _bearer(operator_token_pair(superuser)["access"])


@pytest.fixture
def make_operator_client(db: Any) -> Callable[..., APIClient]:
    """An operator (staff) holding exactly the given permissions (``app.codename``)."""

    def make(*perms: str) -> APIClient:
        user = User.objects.create_user(f"op-{User.objects.count()}", is_staff=True)
        for perm in perms:
            app_label, codename = perm.split(".")
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        return _bearer(operator_token_pair(user)["access"])

    return make


@pytest.fixture
def make_partner(db: Any) -> Callable[..., tuple[Partner, APIClient]]:
    def make(name: str = "Shop", scopes: list[str] | None = None) -> tuple[Partner, APIClient]:
        partner, key = partner_create(
            name=name, scopes=Scope.values if scopes is None else scopes, at=timezone.now()
        )
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
        return partner, client

    return make


@pytest.fixture
def partner_client(make_partner: Callable[..., tuple[Partner, APIClient]]) -> APIClient:
    return make_partner("Shop")[1]


@pytest.fixture
def is_postgres() -> bool:
    return connection.vendor == "postgresql"


# --- Tier building blocks: activity in the daily rollups, certifications -----------------------


@pytest.fixture
def add_activity() -> Callable[..., None]:
    """Rollup rows for a member: ``days`` consecutive business days ending ``ending`` (default
    today), each with the given counts."""

    def add(
        member: Member,
        *,
        days: int = 1,
        ending: date | None = None,
        interactions: int = 0,
        posts: int = 0,
        **counts: Any,
    ) -> None:
        last = ending or business_date_of(timezone.now())
        MemberDailyActivity.objects.bulk_create(
            MemberDailyActivity(
                member=member,
                business_date=last - timedelta(days=offset),
                interactions=interactions + posts,
                posts=posts,
                **counts,
            )
            for offset in range(days)
        )

    return add


@pytest.fixture
def certify() -> Callable[..., CertificationGrant]:
    def grant(
        member: Member, code: str, *, at: datetime | None = None, expires_at: datetime | None = None
    ) -> CertificationGrant:
        at = at or timezone.now() - timedelta(days=1)
        return CertificationGrant.objects.create(
            member=member,
            certification_id=code,
            granted_at=at,
            expires_at=expires_at,
            granted_by="tests",
            updated_at=at,
        )

    return grant


@pytest.fixture
def redis_cache(settings: Any) -> Any:
    """The default cache on the Redis at ``REDIS_URL`` (else the machine's own, on 127.0.0.1)
    under a key prefix of its own. Keys expire on their own: a ``clear()`` would flush the whole
    database, which other tests and workers use. Returns the backend. A Redis that does not
    answer fails the test, naming the service to start (every machine of the project runs one)."""
    import os
    import uuid

    import redis
    from django.core.cache import caches

    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except (redis.RedisError, OSError) as error:
        pytest.fail(f"Redis at {url} does not answer ({error}): start it or set REDIS_URL")
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": f"test-{uuid.uuid4().hex}",
        }
    }
    return caches["default"]
