"""The certification endpoints: the catalog, grants (end to end into a tier), revocation,
access."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core.actors import system_actor
from core.models import Scope
from rewards.models import Reason
from rewards.services.ledger import points_award
from tests.helpers import assert_problem

pytestmark = pytest.mark.django_db


def _url(member, tail=""):
    return f"/api/v1/members/{member.pk}/certifications/{tail}"


def test_the_catalog_lists_prerequisites_and_the_tiers_requiring_each(member_client):
    response = member_client.get("/api/v1/certifications/")
    assert response.status_code == 200
    rows = {row["code"]: row for row in response.json()}
    assert rows["onboarding"]["required_by_tiers"] == ["active"]
    assert rows["content-creator"]["prerequisites"] == ["onboarding"]
    assert rows["content-creator"]["required_by_tiers"] == ["koc", "kol"]
    assert rows["brand-ambassador"]["required_by_tiers"] == ["kol"]


def test_a_grant_through_the_api_promotes_a_member_who_met_every_other_koc_requirement(
    operator_client, make_member, add_activity, django_capture_on_commit_callbacks
):
    member = make_member(at=timezone.now() - timedelta(days=100))
    add_activity(member, days=6, interactions=3, posts=1)
    points_award(
        member=member, points=650, reason=Reason.MANUAL, actor=system_actor("t"), at=timezone.now()
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert (
            operator_client.post(_url(member), {"certification": "onboarding"}).status_code == 201
        )
    member.refresh_from_db()
    assert member.tier_id == "active"

    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(
            _url(member), {"certification": "content-creator", "evidence": "Course 12"}
        )
    assert response.status_code == 201
    body = response.json()
    assert (body["certification"], body["status"], body["evidence"]) == (
        "content-creator",
        "held",
        "Course 12",
    )
    member.refresh_from_db()
    assert member.tier_id == "koc"
    history = operator_client.get(f"/api/v1/members/{member.pk}/tier-history/").json()
    assert [(row["to_tier"], row["reason"]) for row in history["results"]] == [
        ("koc", "reassessment"),
        ("active", "reassessment"),
    ]

    again = operator_client.post(_url(member), {"certification": "content-creator"})
    assert again.status_code == 200
    listed = operator_client.get(_url(member)).json()
    assert [row["certification"] for row in listed] == ["onboarding", "content-creator"]


def test_revocation_needs_a_reason_and_a_held_certification(operator_client, member):
    operator_client.post(_url(member), {"certification": "onboarding"})
    assert_problem(operator_client.delete(_url(member, "onboarding/"), {}), 400)
    response = operator_client.delete(
        _url(member, "onboarding/"), {"reason": "Duplicate account"}, format="json"
    )
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["revoke_reason"]) == (
        "revoked",
        "Duplicate account",
    )
    again = operator_client.delete(_url(member, "onboarding/"), {"reason": "x"}, format="json")
    assert_problem(again, 409, "not_certified")


def test_bad_grants_are_4xx_and_change_nothing(operator_client, member):
    assert_problem(operator_client.post(_url(member), {"certification": "astronaut"}), 400)
    assert_problem(operator_client.post(_url(member), {"certification": "onboarding", "x": 1}), 400)
    body = assert_problem(
        operator_client.post(_url(member), {"certification": "content-creator"}),
        409,
        "prerequisite_missing",
    )
    assert body["errors"][0]["detail"] == "onboarding"
    assert operator_client.get(_url(member)).json() == []


def test_access(member_client, member, other_member, make_partner, make_operator_client):
    assert member_client.get(_url(member)).status_code == 200
    assert_problem(member_client.get(_url(other_member)), 404)
    assert_problem(member_client.post(_url(member), {"certification": "onboarding"}), 403)
    _, reader = make_partner("Reader", scopes=[Scope.MEMBERS_READ])
    assert reader.get(_url(member)).status_code == 200
    assert_problem(reader.post(_url(member), {"certification": "onboarding"}), 403)
    _, writer = make_partner("Writer", scopes=[Scope.MEMBERS_WRITE])
    assert writer.post(_url(member), {"certification": "onboarding"}).status_code == 201
    plain = make_operator_client()
    assert_problem(plain.post(_url(member), {"certification": "onboarding"}), 403)
    granter = make_operator_client("rewards.grant_certification")
    assert granter.post(_url(other_member), {"certification": "onboarding"}).status_code == 201
