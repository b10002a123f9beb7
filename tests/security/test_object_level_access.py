"""OWASP API1 (broken object-level authorization), generated from the URL resolver: every
operation a member token may call that names a member-owned object in its path (a member id, a
redemption id) is called by the owner (2xx: the control) and by another member (404 problem,
never 403, nothing changed). Member operations that name no owned object must be reviewed
catalogue reads or self-scoped lists, so a new member path cannot skip this test."""

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from core.actors import Actor, ActorKind, system_actor
from core.api.tokens import member_token_pair
from members.services import TagInput, tags_replace_namespace
from rewards.models import Redemption
from rewards.services.catalog import redemption_create, reward_create
from rewards.services.certifications import certification_grant
from rewards.services.honors import badge_award
from rewards.services.ledger import points_award
from tests.helpers import assert_problem
from tests.security.routes import UNSAFE, Operation, api_operations
from tests.security.test_function_level_access import _row_counts

# Path parameters that name something a member owns.
OWNED_PARAMS = {"member_id", "redemption_id"}
# Reviewed: member operations that name nothing owned, outside /me/: catalogue reads, lists the
# selector scopes to the caller, and redeeming (for oneself; naming another member is 404).
MEMBER_SHARED = {
    "GET /api/v1/tiers/",
    "GET /api/v1/certifications/",
    "GET /api/v1/rewards/",
    "GET /api/v1/rewards/{reward_id}/",
    "POST /api/v1/rewards/{reward_id}/redemptions/",
    "GET /api/v1/redemptions/",
    "GET /api/v1/benefits/",
    "GET /api/v1/badges/",
}
CREDENTIAL_KEY = "ZGVtby1rZXktZm9yLXRoZS1hY2Nlc3MtbWF0cml4ISE="

MEMBER_OPERATIONS = [
    operation for operation in api_operations() if operation.member_may and not operation.is_public
]
OWNED = [operation for operation in MEMBER_OPERATIONS if OWNED_PARAMS & set(operation.params)]
BODIES = {"PATCH /api/v1/redemptions/{redemption_id}/": {"status": "cancelled", "reason": "x"}}


def _member_client(member) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {member_token_pair(member.pk)['access']}")
    return client


@pytest.fixture
def victim(settings, member, make_partner):
    """A member holding one of everything a member-scoped path can name."""
    settings.LOYALTY_CREDENTIAL_SIGNING_KEY = CREDENTIAL_KEY
    now = timezone.now()
    actor = system_actor("tests")
    points_award(member=member, points=50, reason="manual", actor=actor, at=now)
    badge_award(member=member, code="streak-7", actor=actor, at=now)
    certification_grant(member=member, code="onboarding", actor=actor, at=now)
    shop, _ = make_partner("Shop", scopes=["tags:write"])
    tags_replace_namespace(
        member=member,
        namespace=shop.namespace,
        tags=[TagInput(key="vip")],
        actor=Actor(kind=ActorKind.PARTNER, partner_id=shop.pk, partner_namespace=shop.namespace),
        at=now,
    )
    reward = reward_create(name="Pin", points_cost=1, actor=actor, at=now)
    redemption = redemption_create(member=member, reward=reward, actor=actor, at=now)
    return member, {
        "member_id": member.pk,
        "redemption_id": redemption.pk,
        "namespace": shop.namespace,
        "reward_id": reward.pk,
    }


def _values(operation: Operation, values: dict) -> dict:
    code = "streak-7" if "/badges/" in operation.route else "onboarding"
    missing = set(operation.params) - {*values, "code"}
    assert not missing, f"{operation.label}: give the victim a {missing} in the fixture"
    return {**values, "code": code}


def _call(client: APIClient, operation: Operation, values: dict):
    path = operation.path(_values(operation, values))
    method = getattr(client, operation.method.lower())
    if operation.method in UNSAFE:
        return method(path, BODIES.get(operation.label, {}), format="json")
    return method(path)


def test_every_member_operation_is_own_space_owned_or_reviewed():
    unreviewed = {
        operation.label
        for operation in MEMBER_OPERATIONS
        if not operation.route.startswith("/api/v1/me/")
        and not OWNED_PARAMS & set(operation.params)
    }

    assert unreviewed == MEMBER_SHARED
    assert len(OWNED) >= 15


@pytest.mark.parametrize("operation", OWNED, ids=[operation.label for operation in OWNED])
def test_another_member_gets_404_where_the_owner_gets_through(victim, other_member, operation):
    member, values = victim
    before = _row_counts()

    refused = _call(_member_client(other_member), operation, values)

    assert_problem(refused, 404)
    assert _row_counts() == before
    allowed = _call(_member_client(member), operation, values)
    assert 200 <= allowed.status_code < 300, (operation.label, allowed.content[:300])


def test_a_member_cannot_redeem_for_another_member(victim, other_member):
    member, values = victim
    count = Redemption.objects.count()

    response = _member_client(other_member).post(
        f"/api/v1/rewards/{values['reward_id']}/redemptions/",
        {"member": str(member.pk)},
        format="json",
    )

    assert_problem(response, 404)
    assert Redemption.objects.count() == count


def test_lists_scoped_to_the_caller_show_nothing_of_another_member(victim, other_member):
    _, values = victim
    client = _member_client(other_member)

    redemptions = client.get("/api/v1/redemptions/").json()["results"]
    entries = client.get("/api/v1/me/points/entries/").json()["results"]
    me = client.get("/api/v1/me/").json()

    assert redemptions == []
    assert entries == []
    assert me["id"] == str(other_member.pk)
    assert str(values["redemption_id"]) not in str(me)
