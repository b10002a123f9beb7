"""Sign-in and tokens: operators, members, partner-minted member tokens."""

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from core.api.tokens import member_token_pair
from members.models import Member
from tests.helpers import assert_problem

TOKEN = "/api/v1/auth/token/"
REFRESH = "/api/v1/auth/token/refresh/"
MEMBER_TOKENS = "/api/v1/auth/member-tokens/"


def _bearer(access: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def test_operator_signs_in_and_uses_the_operator_api(db):
    User.objects.create_user("ops", password="s3cret-pass", is_staff=True, is_superuser=True)

    response = APIClient().post(TOKEN, {"username": "ops", "password": "s3cret-pass"})

    assert response.status_code == 200
    assert _bearer(response.json()["access"]).get("/api/v1/members/").status_code == 200


def test_member_signs_in_and_reaches_only_me(member):
    user = User.objects.create_user("ann", password="s3cret-pass")
    Member.objects.filter(pk=member.pk).update(user=user)

    response = APIClient().post(TOKEN, {"username": "ann", "password": "s3cret-pass"})

    client = _bearer(response.json()["access"])
    me = client.get("/api/v1/me/")
    assert me.status_code == 200
    assert me.json()["id"] == str(member.pk)
    assert_problem(client.get("/api/v1/members/"), 403)


@pytest.mark.parametrize(
    "body",
    [{"username": "ops", "password": "wrong"}, {"username": "nobody", "password": "x"}],
)
def test_wrong_credentials_are_401_problem(db, body):
    User.objects.create_user("ops", password="s3cret-pass", is_staff=True)

    response = APIClient().post(TOKEN, body)

    assert_problem(response, 401, "invalid_credentials")


def test_plain_user_without_member_or_staff_cannot_sign_in(db):
    User.objects.create_user("plain", password="s3cret-pass")

    response = APIClient().post(TOKEN, {"username": "plain", "password": "s3cret-pass"})

    assert_problem(response, 401, "invalid_credentials")


def test_refresh_rotates_and_keeps_the_role(member):
    pair = member_token_pair(member.pk)

    response = APIClient().post(REFRESH, {"refresh": pair["refresh"]})

    assert response.status_code == 200
    assert response.json()["refresh"] != pair["refresh"]
    assert _bearer(response.json()["access"]).get("/api/v1/me/").json()["id"] == str(member.pk)


def test_erased_member_cannot_refresh(member, operator_client):
    pair = member_token_pair(member.pk)
    operator_client.delete(f"/api/v1/members/{member.pk}/")

    response = APIClient().post(REFRESH, {"refresh": pair["refresh"]})

    assert_problem(response, 401, "invalid_credentials")


def test_garbage_refresh_token_is_401(db):
    response = APIClient().post(REFRESH, {"refresh": "not-a-token"})

    assert_problem(response, 401, "token_not_valid")


def test_garbage_bearer_token_is_401(db):
    response = _bearer("not-a-token").get("/api/v1/members/")

    assert_problem(response, 401)


def test_partner_with_scope_mints_member_token(make_partner, member):
    _, client = make_partner("Login", scopes=["members:token"])

    response = client.post(MEMBER_TOKENS, {"external_id": member.external_id})

    assert response.status_code == 200
    assert _bearer(response.json()["access"]).get("/api/v1/me/").json()["id"] == str(member.pk)


def test_partner_without_scope_cannot_mint(make_partner, member):
    _, client = make_partner("Shop", scopes=["members:read"])

    response = client.post(MEMBER_TOKENS, {"external_id": member.external_id})

    assert_problem(response, 403)


def test_minting_for_unknown_member_is_404(make_partner, db):
    _, client = make_partner("Login", scopes=["members:token"])

    response = client.post(MEMBER_TOKENS, {"external_id": "nobody"})

    assert_problem(response, 404)


def test_invalid_or_revoked_api_key_is_401(make_partner, member):
    partner, client = make_partner("Shop")
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Api-Key abc.def")
    partner.api_keys.update(revoked=True)

    assert_problem(bad.get("/api/v1/members/"), 401, "invalid_api_key")
    assert_problem(client.get("/api/v1/members/"), 401, "invalid_api_key")


def test_inactive_partner_is_401(make_partner, db):
    partner, client = make_partner("Shop")
    partner.is_active = False
    partner.save()

    assert_problem(client.get("/api/v1/members/"), 401, "invalid_api_key")


def test_x_api_key_header_also_works(db):
    from django.utils import timezone

    from core.services import partner_create

    _, key = partner_create(name="Shop", scopes=["members:read"], at=timezone.now())
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)

    assert client.get("/api/v1/members/").status_code == 200
