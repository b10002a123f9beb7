"""Badges and titles as verifiable credentials: export, an independent Ed25519 check, tampering,
withdrawal (the award deleted) and erasure reported revoked, access (BOLA, not held)."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from core.actors import system_actor
from core.api.tokens import member_token_pair
from core.models import Scope
from rewards.models import Badge, MemberBadge
from rewards.services.honors import badge_award
from tests.helpers import assert_problem
from tests.rewards.test_credentials import (
    SIGNING_KEY,
    VERIFY_URL,
    independently_verified,
)

pytestmark = pytest.mark.django_db

ISSUER_ID = "https://testserver/api/v1/credentials/issuer/"


@pytest.fixture(autouse=True)
def _signing_key(settings):
    settings.LOYALTY_CREDENTIAL_SIGNING_KEY = SIGNING_KEY
    settings.LOYALTY_CREDENTIAL_RETIRED_PUBLIC_KEYS = []


def _award(member, code="community-hero", at=None):
    at = at or timezone.now() - timedelta(days=3)
    return badge_award(member=member, code=code, actor=system_actor("t"), at=at).award


def _url(member, code="community-hero"):
    return f"/api/v1/members/{member.pk}/badges/{code}/credential/"


def _verify(client, document):
    body = client.post(VERIFY_URL, document, format="json").json()
    return body, (body["verified"], body["signature_valid"], body["revoked"], body["expired"])


@pytest.fixture
def held(member):
    return _award(member)


# --- Export --------------------------------------------------------------------------------------


def test_a_badge_credential_verifies_with_an_independent_ed25519_check(
    member_client, anonymous_client, member, held
):
    response = member_client.get("/api/v1/me/badges/community-hero/credential/")

    assert response.status_code == 200
    document = response.json()
    assert independently_verified(document)
    assert document["type"] == ["VerifiableCredential", "OpenBadgeCredential"]
    assert document["issuer"]["id"] == ISSUER_ID
    assert document["credentialSubject"]["id"] == f"urn:uuid:{member.pk}"
    assert document["credentialSubject"]["achievement"] == {
        "id": "urn:loyalty:achievement:badge:community-hero",
        "type": ["Achievement"],
        "achievementType": "Badge",
        "name": "Community hero",
        "description": "Recognised by the team for helping others.",
        "criteria": {"narrative": "Recognised by the team for helping others."},
    }
    assert document["validFrom"] == held.awarded_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "validUntil" not in document
    body, flags = _verify(anonymous_client, document)
    assert flags == (True, True, False, False)
    assert body["errors"] == []


def test_a_title_is_an_award(member_client, member):
    _award(member, "title-kol")

    document = member_client.get(_url(member, "title-kol")).json()

    achievement = document["credentialSubject"]["achievement"]
    assert (achievement["achievementType"], achievement["name"]) == ("Award", "KOL")
    assert independently_verified(document)


def test_the_member_path_and_the_me_path_attest_the_same_award(member_client, member, held):
    mine = member_client.get("/api/v1/me/badges/community-hero/credential/").json()
    by_id = member_client.get(_url(member)).json()

    assert by_id["id"] == mine["id"]
    assert independently_verified(by_id)


def test_the_display_name_only_with_public_recognition_and_the_vc_media_type(
    member_client, member, held
):
    member.public_recognition = True
    member.save(update_fields=["public_recognition"])

    response = member_client.get(_url(member), HTTP_ACCEPT="application/vc")

    assert response["Content-Type"] == "application/vc"
    document = json.loads(response.content)
    assert document["credentialSubject"]["identifier"][0]["identityHash"] == "Self"
    assert independently_verified(document)


# --- Verification ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("validFrom",), "2020-01-01T00:00:00Z"),
        (("credentialSubject", "id"), "urn:uuid:00000000-0000-4000-8000-000000000001"),
        (("credentialSubject", "achievement", "id"), "urn:loyalty:achievement:badge:title-kol"),
        (("credentialSubject", "achievement", "achievementType"), "Award"),
        (("validUntil",), "2099-01-01T00:00:00Z"),
    ],
)
def test_a_tampered_badge_credential_fails_both_checks(
    member_client, anonymous_client, member, held, path, value
):
    document = member_client.get(_url(member)).json()
    container = document
    for key in path[:-1]:
        container = container[key]
    container[path[-1]] = value

    body, flags = _verify(anonymous_client, document)

    assert not independently_verified(document)
    assert flags == (False, False, None, None)
    assert body["errors"][0]["code"] == "signature_invalid"


def test_a_withdrawn_badge_is_reported_revoked(member_client, anonymous_client, member, held):
    document = member_client.get(_url(member)).json()
    MemberBadge.objects.filter(pk=held.pk).delete()

    body, flags = _verify(anonymous_client, document)

    assert independently_verified(document)
    assert flags == (False, True, True, False)
    assert [error["code"] for error in body["errors"]] == ["revoked"]


def test_a_badge_awarded_afresh_does_not_revive_the_old_credential(
    member_client, anonymous_client, member, held
):
    old = member_client.get(_url(member)).json()
    MemberBadge.objects.filter(pk=held.pk).delete()
    _award(member, at=timezone.now() - timedelta(hours=1))
    new = member_client.get(_url(member)).json()

    assert new["id"] != old["id"]
    assert _verify(anonymous_client, old)[1] == (False, True, True, False)
    assert _verify(anonymous_client, new)[1] == (True, True, False, False)


def test_an_erased_holder_is_reported_revoked_and_cannot_export(
    member_client, anonymous_client, member, held, make_operator_client
):
    document = member_client.get(_url(member)).json()
    member.erased_at = timezone.now()
    member.save(update_fields=["erased_at"])

    assert _verify(anonymous_client, document)[1] == (False, True, True, False)
    operator = make_operator_client("rewards.view_memberbadge")
    assert_problem(operator.get(_url(member)), 409, "badge_not_held")


def test_a_badge_credential_under_another_kind_or_code_is_unknown(
    member_client, anonymous_client, member, held
):
    # Genuine signature, but an achievement kind nobody checks: never verified.
    from rewards import credentials

    issuer = credentials.issuer_get()
    claim = credentials.AchievementClaim(
        kind="trophy",
        code="community-hero",
        name="x",
        description="",
        achievement_type="Badge",
        member_id=member.pk,
        valid_from=held.awarded_at,
        valid_until=None,
        revision_at=held.awarded_at,
    )
    document = credentials.proof_add(
        credentials.credential_build(
            claim=claim, issuer_id=issuer.id, issuer_name=issuer.name, status_url=issuer.status_url
        ),
        private_key=issuer.private_key,
        verification_method=issuer.verification_method,
        created=timezone.now(),
    )

    body, flags = _verify(anonymous_client, document)

    assert flags[:2] == (False, True)
    assert body["errors"][0]["code"] == "unknown_achievement"


# --- Access ---------------------------------------------------------------------------------


def _bearer(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.mark.parametrize(
    ("role", "status"),
    [
        ("anonymous", 401),
        ("member (self)", 200),
        ("other member", 404),
        ("operator with view_memberbadge", 200),
        ("operator without permission", 403),
        ("partner with members:read", 200),
        ("partner without members:read", 403),
    ],
)
def test_access_to_a_member_badge_credential(
    role, status, member, other_member, make_operator_client, make_partner
):
    _award(member)
    _award(other_member)
    clients = {
        "anonymous": APIClient,
        "member (self)": lambda: _bearer(member_token_pair(member.pk)["access"]),
        "other member": lambda: _bearer(member_token_pair(other_member.pk)["access"]),
        "operator with view_memberbadge": lambda: make_operator_client("rewards.view_memberbadge"),
        "operator without permission": make_operator_client,
        "partner with members:read": lambda: make_partner("A", [Scope.MEMBERS_READ])[1],
        "partner without members:read": lambda: make_partner("B", [Scope.POINTS_AWARD])[1],
    }

    response = clients[role]().get(_url(member))

    assert response.status_code == status, response.content[:300]
    if status == 200:
        assert independently_verified(response.json())


def test_another_members_badge_is_404(member_client, other_member):
    _award(other_member)

    assert_problem(member_client.get(_url(other_member)), 404, "not_found")


def test_a_badge_not_held_or_inactive_or_unknown_is_404(member_client, member, held):
    _award(member, "streak-7")
    Badge.objects.filter(pk="streak-7").update(is_active=False)

    for code in ("title-kol", "streak-7", "no-such-badge"):
        assert_problem(member_client.get(_url(member, code)), 404, "not_found")
        assert_problem(member_client.get(f"/api/v1/me/badges/{code}/credential/"), 404, "not_found")


def test_export_and_verification_read_a_fixed_number_of_rows(
    member_client, anonymous_client, member, held, django_assert_num_queries
):
    with django_assert_num_queries(2):  # the member, the award with its badge
        document = member_client.get(_url(member)).json()

    with django_assert_num_queries(1):  # the award with the holder's erasure
        assert anonymous_client.post(VERIFY_URL, document, format="json").json()["verified"]
