"""Cached member documents (core/read_cache.py): a current document costs no query, and every
kind of write shows in the very next read of ``GET me/`` and of the member's tier."""

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from core.actors import system_actor
from core.api.tokens import member_token_pair
from core.read_cache import all_reads_changed, member_document, member_reads_changed
from members.lifecycle import lifecycle_refresh
from members.models import Member
from members.services import identities_replace, member_erase, member_update
from rewards.models import Benefit
from rewards.services.certifications import certification_grant, certification_revoke
from rewards.services.earning import checkin_create
from rewards.services.honors import badge_award, benefit_save
from rewards.services.ledger import points_award, points_deduct
from tiers.services.promotions import tier_promote
from tiers.services.reassessment import member_tier_reassess

ACTOR = system_actor("tests")


def _me(client: APIClient) -> dict[str, Any]:
    response = client.get("/api/v1/me/")
    assert response.status_code == 200, response.content
    return response.json()


def _tier(client: APIClient, member: Member) -> dict[str, Any]:
    response = client.get(f"/api/v1/members/{member.pk}/tier/")
    assert response.status_code == 200, response.content
    return response.json()


def test_a_current_document_is_served_without_a_query(
    member, member_client, operator_client, django_assert_num_queries
) -> None:
    first = _me(member_client)
    _tier(operator_client, member)

    with django_assert_num_queries(0):
        assert _me(member_client) == first
    with django_assert_num_queries(0):  # the operator's lookup is cached as well
        _tier(operator_client, member)


def test_a_write_during_the_build_leaves_no_stale_document_behind(member) -> None:
    """The reader read the tokens before building; the writer's change replaces them, so what
    the reader stored (possibly from the state before the write) is never served."""
    builds: list[int] = []

    def build() -> int:
        builds.append(len(builds))
        if len(builds) == 1:
            member_reads_changed([member.pk])  # a writer commits mid-build
        return len(builds)

    assert member_document(kind="probe", member_id=member.pk, build=build) == 1
    assert member_document(kind="probe", member_id=member.pk, build=build) == 2
    assert member_document(kind="probe", member_id=str(member.pk), build=build) == 2
    assert member_document(kind="probe", member_id=member.pk.hex, build=build) == 2


def test_everyones_token_and_the_setting(member, settings) -> None:
    values = iter(range(10))
    assert member_document(kind="probe", member_id=member.pk, build=lambda: next(values)) == 0
    all_reads_changed()
    assert member_document(kind="probe", member_id=member.pk, build=lambda: next(values)) == 1
    assert member_document(kind="probe", member_id=member.pk, build=lambda: next(values)) == 1
    settings.LOYALTY_READ_CACHE_SECONDS = 0
    assert member_document(kind="probe", member_id=member.pk, build=lambda: next(values)) == 2
    assert member_document(kind="probe", member_id=member.pk, build=lambda: next(values)) == 3


def test_a_failed_build_caches_nothing(member) -> None:
    def fail() -> int:
        raise LookupError

    with pytest.raises(LookupError):
        member_document(kind="probe", member_id=member.pk, build=fail)
    assert member_document(kind="probe", member_id=member.pk, build=lambda: 7) == 7


@pytest.mark.django_db(transaction=True)
def test_the_commit_replaces_the_token_again(make_member) -> None:
    """A reader between the write and its commit builds from the old state; the replacement
    after the commit makes that document count for nothing."""
    member = make_member()
    values = iter(range(10))
    with transaction.atomic():
        member_reads_changed([member.pk])
        assert member_document(kind="probe", member_id=member.pk, build=lambda: next(values)) == 0
    assert member_document(kind="probe", member_id=member.pk, build=lambda: next(values)) == 1


def _now() -> Any:
    return timezone.now()


def _held(body: dict[str, Any]) -> list[str]:
    return [grant["certification"] for grant in body["certifications"] if grant["status"] == "held"]


# Each write, and what the next ``GET me/`` must show of it.
WRITES: dict[str, tuple[Callable[[Member], Any], Callable[[dict[str, Any]], Any]]] = {
    "points award": (
        lambda m: points_award(member=m, points=50, reason="manual", actor=ACTOR, at=_now()),
        lambda body: body["balance"]["available"] == 50,
    ),
    "badge": (
        lambda m: badge_award(member=m, code="community-hero", actor=ACTOR, at=_now()),
        lambda body: "community-hero" in {badge["badge"] for badge in body["badges"]},
    ),
    "certification": (
        lambda m: certification_grant(member=m, code="onboarding", actor=ACTOR, at=_now()),
        lambda body: _held(body) == ["onboarding"],
    ),
    "profile": (
        lambda m: member_update(
            member=m, changes={"display_name": "Renamed"}, actor=ACTOR, at=_now()
        ),
        lambda body: body["display_name"] == "Renamed",
    ),
    "identities": (
        lambda m: identities_replace(
            member=m, identities=[("wechat", "openid-1")], actor=ACTOR, at=_now()
        ),
        lambda body: (
            [(i["provider"], i["value"]) for i in body["identities"]] == [("wechat", "openid-1")]
        ),
    ),
    "promotion": (
        lambda m: tier_promote(member=m, tier="koc", reason="tests", actor=ACTOR, at=_now()),
        lambda body: (body["tier"], body["tier_progress"]["tier"]) == ("koc", "koc"),
    ),
    "check-in": (
        lambda m: checkin_create(member=m, actor=ACTOR, at=_now()),
        lambda body: body["balance"]["lifetime_earned"] > 0,
    ),
    "saved by the ORM (the admin's change form)": (
        lambda m: _renamed(m).save(),
        lambda body: body["display_name"] == "Edited in the admin",
    ),
}


def _renamed(member: Member) -> Member:
    fresh = Member.objects.get(pk=member.pk)
    fresh.display_name = "Edited in the admin"
    return fresh


@pytest.mark.parametrize("write", list(WRITES))
def test_every_write_shows_in_the_next_read_of_me(member, member_client, write) -> None:
    act, shows = WRITES[write]
    before = _me(member_client)
    assert not shows(before)

    act(member)

    assert shows(_me(member_client)), write


def test_a_revoked_certification_and_a_lifecycle_move_show_at_once(member, member_client) -> None:
    certification_grant(member=member, code="onboarding", actor=ACTOR, at=_now())
    assert _held(_me(member_client)) == ["onboarding"]

    certification_revoke(member=member, code="onboarding", reason="tests", actor=ACTOR, at=_now())
    Member.objects.filter(pk=member.pk).update(last_activity_at=None, lifecycle_stage="active")
    with transaction.atomic():
        lifecycle_refresh(member_ids=[member.pk], at=_now())

    body = _me(member_client)
    assert _held(body) == []
    assert body["lifecycle_stage"] == Member.objects.get(pk=member.pk).lifecycle_stage


def test_a_reassessment_shows_in_the_tier_document(member, operator_client) -> None:
    """A KOC with no activity at all: the reassessment demotes them or starts their grace."""
    tier_promote(member=member, tier="koc", reason="tests", actor=ACTOR, at=_now())
    cached = _tier(operator_client, member)

    member_tier_reassess(member_id=member.pk, actor=ACTOR, at=_now())

    stored = Member.objects.get(pk=member.pk)
    assert (stored.tier_id, stored.tier_grace_until) != ("koc", None)
    after = _tier(operator_client, member)
    assert after != cached
    assert after["tier"] == stored.tier_id
    assert (after["grace_until"] is None) == (stored.tier_grace_until is None)


def test_a_catalog_change_shows_for_every_member(make_member) -> None:
    members = [make_member(), make_member()]
    clients = []
    for member in members:
        tier_promote(member=member, tier="active", reason="tests", actor=ACTOR, at=_now())
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {member_token_pair(member.pk)['access']}")
        clients.append(client)
        _me(client)
    benefit = Benefit.objects.filter(tier="active").exclude(kind="points_multiplier").first()
    assert benefit is not None
    benefit.name = "Renamed benefit"
    benefit_save(benefit=benefit, points_multiplier=None, actor=ACTOR, at=_now())

    for client in clients:
        names = {row["name"] for row in _me(client)["benefits"]}
        assert "Renamed benefit" in names


def test_a_deduction_shows_in_the_next_read(member, member_client) -> None:
    points_award(member=member, points=10, reason="manual", actor=ACTOR, at=_now())
    assert _me(member_client)["balance"]["available"] == 10

    points_deduct(member=member, points=4, reason="manual", actor=ACTOR, at=_now())

    assert _me(member_client)["balance"]["available"] == 6


def test_an_erased_member_is_not_served_from_the_cache(member, member_client) -> None:
    name = _me(member_client)["display_name"]

    member_erase(member=member, actor=ACTOR, at=_now())

    response = member_client.get("/api/v1/me/")
    assert response.status_code != 200 or response.json()["display_name"] != name


def test_a_member_never_reads_another_members_cached_tier(
    member, other_member, member_client, operator_client
) -> None:
    _tier(operator_client, other_member)  # cached

    response = member_client.get(f"/api/v1/members/{other_member.pk}/tier/")

    assert response.status_code in (403, 404)


def test_points_multiplier_edit_in_the_catalog_shows(member, member_client) -> None:
    tier_promote(member=member, tier="koc", reason="tests", actor=ACTOR, at=_now())
    _me(member_client)
    benefit = Benefit.objects.filter(tier="koc", kind="points_multiplier").first()
    assert benefit is not None

    benefit_save(benefit=benefit, points_multiplier=Decimal("1.75"), actor=ACTOR, at=_now())

    values = {row["kind"]: row["value"] for row in _me(member_client)["benefits"]}
    assert values["points_multiplier"] == "1.75"


def test_ingested_activity_shows_in_the_next_read(member, member_client, partner_client) -> None:
    before = _me(member_client)["tier_progress"]
    posted = partner_client.post(
        "/api/v1/events/",
        {
            "events": [
                {
                    "id": f"read-cache-{index}",
                    "external_id": member.external_id,
                    "type": "post",
                    "occurred_at": _now().isoformat(),
                    "properties": {},
                }
                for index in range(3)
            ]
        },
        format="json",
    )
    assert posted.status_code == 200, posted.content

    after = _me(member_client)
    assert after["tier_progress"] != before
    assert after["last_activity_at"] is not None


def test_with_the_cache_down_reads_build_and_writes_go_on(member, member_client) -> None:
    from unittest import mock

    from django.core.cache import cache
    from redis import ConnectionError as RedisConnectionError

    down = RedisConnectionError("Redis is down")
    with (
        mock.patch.object(cache, "get_many", side_effect=down),
        mock.patch.object(cache, "set", side_effect=down),
        mock.patch.object(cache, "set_many", side_effect=down),
    ):
        assert member_document(kind="probe", member_id=member.pk, build=lambda: 1) == 1
        points_award(member=member, points=30, reason="manual", actor=ACTOR, at=_now())
        assert _me(member_client)["balance"]["available"] == 30


def test_with_redis_tokens_are_replaced_in_one_command_and_expire(
    make_member, redis_cache, settings
) -> None:
    settings.LOYALTY_READ_CACHE_SECONDS = 5
    members = [make_member(), make_member()]
    values = iter(range(10))
    for member in members:
        member_document(kind="probe", member_id=member.pk, build=lambda: next(values))
    assert [
        member_document(kind="probe", member_id=m.pk, build=lambda: next(values)) for m in members
    ] == [0, 1]

    member_reads_changed([member.pk for member in members])

    assert [
        member_document(kind="probe", member_id=m.pk, build=lambda: next(values)) for m in members
    ] == [2, 3]
    client = redis_cache._cache.get_client()
    ttl = client.ttl(redis_cache.make_key(f"reads:member:{members[0].pk}"))
    assert 0 < ttl <= 10  # twice the documents' lifetime


def test_a_document_expires_when_time_alone_changes_it(settings) -> None:
    """At the next business day, or the earliest future instant the document shows."""
    from datetime import UTC, datetime

    import time_machine

    from core.read_cache import _lifetime

    settings.LOYALTY_BUSINESS_TIME_ZONE = "Asia/Shanghai"
    # 2026-05-10 12:00 UTC is 20:00 in Shanghai: the business day ends in 4 hours.
    with time_machine.travel(datetime(2026, 5, 10, 12, 0, tzinfo=UTC), tick=False):
        assert _lifetime({"joined_at": "2026-01-01T00:00:00Z"}, 300) == 300
        assert _lifetime({"a": "x"}, 86_400) == 4 * 3600
        expiring = {"certifications": [{"expires_at": "2026-05-10T12:00:42Z"}]}
        assert _lifetime(expiring, 300) == 42
        grace = {"tier_progress": {"grace_until": "2026-05-10T12:02:00+00:00"}}
        assert _lifetime(grace, 300) == 120
        # A bare date (points expiring that day) counts from its start in UTC.
        assert _lifetime({"expiring": [{"date": "2026-05-11", "points": 5}]}, 86_400) == 4 * 3600
        assert _lifetime({"display_name": "2026-99-99 is not a date"}, 300) == 300
        assert _lifetime({"past": "2026-05-10T11:59:59Z"}, 300) == 300
