"""The member's own view (GET me/ in one response, a constant number of queries), badges over
the API (BOLA, idempotent award) and the public honors wall."""

from datetime import timedelta
from unittest import mock

import pytest
from django.db import transaction
from django.utils import timezone
from rest_framework.settings import api_settings
from rest_framework.test import APIClient

from core.actors import system_actor
from core.api.tokens import member_token_pair
from core.models import OutboxEvent
from core.read_cache import member_reads_changed
from members.models import Member
from members.services import member_update
from rewards.models import MemberBadge
from rewards.services.certifications import certification_grant
from rewards.services.honors import badge_award
from rewards.services.ledger import points_award
from tests.helpers import assert_problem
from tiers.services.promotions import tier_promote

ACTOR = system_actor("tests")
PROFILE_FIELDS = {"id", "external_id", "display_name", "tier", "public_recognition", "identities"}


def _client(member: Member) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {member_token_pair(member.pk)['access']}")
    return client


def _decorated(member: Member) -> Member:
    """A KOL with points, three certifications and many badges."""
    now = timezone.now()
    with transaction.atomic():
        tier_promote(member=member, tier="kol", reason="tests", actor=ACTOR, at=now)
        for code in ("onboarding", "content-creator", "brand-ambassador"):
            certification_grant(member=member, code=code, actor=ACTOR, at=now)
        for code in ("community-hero", "title-koc", "title-kol", "first-post", "streak-7"):
            badge_award(member=member, code=code, actor=ACTOR, at=now)
        points_award(member=member, points=120, reason="manual", actor=ACTOR, at=now)
    return Member.objects.get(pk=member.pk)


def test_me_returns_the_whole_own_view(member, member_client) -> None:
    _decorated(member)

    response = member_client.get("/api/v1/me/")

    assert response.status_code == 200
    body = response.json()
    assert set(body) >= PROFILE_FIELDS
    assert (body["id"], body["tier"], body["title"]) == (str(member.pk), "kol", "KOL")
    assert body["tier_progress"]["tier"] == "kol"
    assert body["tier_progress"]["next_tier"] is None
    assert body["balance"]["available"] == 120
    assert len(body["benefits"]) == 7
    assert {benefit["kind"]: benefit["value"] for benefit in body["benefits"]}[
        "points_multiplier"
    ] == "1.50"
    # Five awarded by hand; the promotion added the tier titles up to kol (title-active too),
    # the certifications the certified badges.
    assert {badge["badge"] for badge in body["badges"]} == {
        "community-hero",
        "title-koc",
        "title-kol",
        "first-post",
        "streak-7",
        "onboarded",
        "certified-content-creator",
        "certified-brand-ambassador",
        "title-active",
    }
    assert [grant["certification"] for grant in body["certifications"]] == [
        "onboarding",
        "content-creator",
        "brand-ambassador",
    ]
    assert {grant["status"] for grant in body["certifications"]} == {"held"}


def test_a_new_member_sees_progress_to_the_next_tier(member, member_client) -> None:
    body = member_client.get("/api/v1/me/").json()

    assert (body["tier"], body["title"], body["benefits"], body["badges"]) == (
        "basic",
        None,
        [],
        [],
    )
    assert body["tier_progress"]["next_tier"] == "active"
    assert {check["metric"] for check in body["tier_progress"]["requirements"]} == {
        "certification",
        "interactions",
        "active_days",
    }


def test_me_takes_the_same_number_of_queries_with_nothing_or_everything(
    make_member, django_assert_num_queries
) -> None:
    bare = make_member()
    decorated = _decorated(make_member())
    clients = (_client(bare), _client(decorated))
    for client in clients:  # warm up: token checks and caches
        client.get("/api/v1/me/")

    for member, client in zip((bare, decorated), clients, strict=True):
        member_reads_changed([member.pk])  # the document is built afresh: what a miss costs
        with django_assert_num_queries(ME_QUERIES):
            assert client.get("/api/v1/me/").status_code == 200
        with django_assert_num_queries(0):  # while nothing changes, the cached document
            assert client.get("/api/v1/me/").status_code == 200


# The member and identities (2); the assessment (3: state and rollups, qualifying points,
# certifications held); the balance (3); benefits, badges, certifications (1 each). The rules in
# force come compiled from the cache (core.read_cache.shared_document) after the first read.
ME_QUERIES = 11


def test_patch_me_edits_the_profile_and_returns_the_own_view(member, member_client) -> None:
    response = member_client.patch("/api/v1/me/", {"public_recognition": True}, format="json")

    assert response.status_code == 200
    assert response.json()["public_recognition"] is True
    assert "tier_progress" in response.json()
    assert Member.objects.get(pk=member.pk).public_recognition is True


# --- Badges over the API ------------------------------------------------------------------------


def test_a_member_reads_own_badges_but_never_another_members(
    member, other_member, member_client
) -> None:
    badge_award(member=other_member, code="community-hero", actor=ACTOR, at=timezone.now())
    badge_award(member=member, code="first-post", actor=ACTOR, at=timezone.now())

    mine = member_client.get(f"/api/v1/members/{member.pk}/badges/")
    theirs = member_client.get(f"/api/v1/members/{other_member.pk}/badges/")
    award = member_client.post(
        f"/api/v1/members/{member.pk}/badges/", {"badge": "community-hero"}, format="json"
    )

    assert [badge["badge"] for badge in mine.json()] == ["first-post"]
    assert_problem(theirs, 404)
    assert_problem(award, 403)
    assert MemberBadge.objects.filter(member=member).count() == 1


def test_an_operator_awards_a_badge_once_with_replays(member, operator_client) -> None:
    path = f"/api/v1/members/{member.pk}/badges/"
    body = {"badge": "community-hero", "reason": "Hosted a meetup"}

    first = operator_client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="award-1")
    replay = operator_client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="award-1")
    again = operator_client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="award-2")

    assert (first.status_code, replay.status_code, again.status_code) == (201, 201, 200)
    assert replay["Idempotent-Replayed"] == "true"
    assert first.json()["badge"] == "community-hero"
    assert first.json()["reason"] == "Hosted a meetup"
    assert again.json() == first.json()
    assert MemberBadge.objects.filter(member=member).count() == 1
    assert OutboxEvent.objects.filter(event_type="badge.awarded").count() == 1


def test_an_unknown_badge_or_field_is_a_400_and_awards_nothing(member, operator_client) -> None:
    path = f"/api/v1/members/{member.pk}/badges/"

    unknown = operator_client.post(path, {"badge": "no-such"}, format="json")
    extra = operator_client.post(path, {"badge": "first-post", "member": "x"}, format="json")

    assert_problem(unknown, 400)
    assert_problem(extra, 400)
    assert MemberBadge.objects.count() == 0
    assert OutboxEvent.objects.filter(event_type="badge.awarded").count() == 0


def test_the_badge_catalog_lists_active_badges_most_prestigious_first(member_client) -> None:
    body = member_client.get("/api/v1/badges/").json()

    assert body[0]["code"] == "title-kol"
    assert {"first-post", "streak-7", "streak-30", "community-hero"} <= {b["code"] for b in body}


# --- The honors wall ----------------------------------------------------------------------------


@pytest.fixture
def wall_members(make_member):
    now = timezone.now()
    shy = make_member("shy", display_name="Shy", email="shy@example.com")
    proud = make_member("proud", display_name="Proud", email="proud@example.com")
    member_update(member=proud, changes={"public_recognition": True}, actor=ACTOR, at=now)
    badge_award(member=shy, code="community-hero", actor=ACTOR, at=now)
    badge_award(member=proud, code="first-post", actor=ACTOR, at=now - timedelta(minutes=1))
    badge_award(member=proud, code="title-koc", actor=ACTOR, at=now)
    return shy, proud


def test_the_wall_is_public_lists_only_opted_in_members_and_no_personal_data(
    wall_members,
) -> None:
    response = APIClient().get("/api/v1/honors/wall/")

    assert response.status_code == 200
    assert response.json() == [
        {
            "display_name": "Proud",
            "badge": "title-koc",
            "badge_name": "KOC",
            "is_title": True,
            "awarded_at": response.json()[0]["awarded_at"],
        },
        {
            "display_name": "Proud",
            "badge": "first-post",
            "badge_name": "First post",
            "is_title": False,
            "awarded_at": response.json()[1]["awarded_at"],
        },
    ]
    text = response.content.decode()
    for private in ("Shy", "proud@example.com", str(wall_members[1].pk), "proud"):
        assert private not in text


def test_the_wall_limit_is_validated(wall_members, member_client) -> None:
    assert len(member_client.get("/api/v1/honors/wall/?limit=1").json()) == 1
    assert_problem(member_client.get("/api/v1/honors/wall/?limit=0"), 400)
    assert_problem(member_client.get("/api/v1/honors/wall/?limit=101"), 400)
    assert_problem(member_client.get("/api/v1/honors/wall/?member=1"), 400)


def test_anonymous_wall_readers_are_rate_limited(wall_members) -> None:
    client = APIClient()

    with mock.patch.dict(api_settings.DEFAULT_THROTTLE_RATES, {"anonymous": "2/min"}):
        statuses = [client.get("/api/v1/honors/wall/").status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
