"""Function- and object-level access for every endpoint built so far, per role.

Roles: anonymous, the member themselves, another member, an operator with and without the Django
permission, a partner with and without the scope. A member addressing another member's id gets
404 (BOLA), never 403.
"""

import pytest
from rest_framework.test import APIClient

from core.api.tokens import member_token_pair

ALL_SCOPES = [
    "members:read",
    "members:write",
    "members:token",
    "tags:write",
    "events:write",
    "points:award",
    "webhooks:manage",
]

# (label, method, path template, body, operator permission, partner scope, member may, ok status)
ENDPOINTS = [
    (
        "list members",
        "get",
        "/api/v1/members/",
        None,
        "members.view_member",
        "members:read",
        False,
        200,
    ),
    (
        "create member",
        "post",
        "/api/v1/members/",
        {"external_id": "new-1", "display_name": "N"},
        "members.add_member",
        "members:write",
        False,
        201,
    ),
    (
        "read member",
        "get",
        "/api/v1/members/{id}/",
        None,
        "members.view_member",
        "members:read",
        True,
        200,
    ),
    (
        "edit member",
        "patch",
        "/api/v1/members/{id}/",
        {"display_name": "E"},
        "members.change_member",
        "members:write",
        False,
        200,
    ),
    (
        "erase member",
        "delete",
        "/api/v1/members/{id}/",
        None,
        "members.delete_member",
        None,
        False,
        204,
    ),
    (
        "read identities",
        "get",
        "/api/v1/members/{id}/identities/",
        None,
        "members.view_identity",
        "members:read",
        True,
        200,
    ),
    (
        "replace identities",
        "put",
        "/api/v1/members/{id}/identities/",
        {"identities": [{"provider": "openid", "value": "o-1"}]},
        "members.change_identity",
        "members:write",
        False,
        200,
    ),
    (
        "read tags",
        "get",
        "/api/v1/members/{id}/tags/",
        None,
        "members.view_membertag",
        "members:read",
        True,
        200,
    ),
    (
        "replace namespace tags",
        "put",
        "/api/v1/members/{id}/tags/shop/",
        {"tags": [{"key": "vip"}]},
        "members.change_membertag",
        "tags:write",
        False,
        200,
    ),
    (
        "tag sync",
        "post",
        "/api/v1/tag-sync/",
        {
            "namespace": "shop",
            "mode": "merge",
            "members": [{"external_id": "member-self", "tags": []}],
        },
        "members.change_membertag",
        "tags:write",
        False,
        200,
    ),
    ("tiers", "get", "/api/v1/tiers/", None, None, "members:read", True, 200),
    (
        "member tier",
        "get",
        "/api/v1/members/{id}/tier/",
        None,
        "members.view_member",
        "members:read",
        True,
        200,
    ),
    (
        "member tier history",
        "get",
        "/api/v1/members/{id}/tier-history/",
        None,
        "members.view_member",
        "members:read",
        True,
        200,
    ),
    (
        "promote member",
        "post",
        "/api/v1/members/{id}/promotions/",
        {"tier": "koc", "reason": "Creator", "pin_days": 30},
        "tiers.promote_member",
        None,
        False,
        201,
    ),
    (
        "list nominations",
        "get",
        "/api/v1/nominations/",
        None,
        "tiers.view_nomination",
        "members:write",
        False,
        200,
    ),
    (
        "nominate",
        "post",
        "/api/v1/nominations/",
        {"member": "{id}", "tier": "kol", "evidence": "Ran meetups"},
        "tiers.add_nomination",
        "members:write",
        False,
        201,
    ),
    (
        "read nomination",
        "get",
        "/api/v1/nominations/{nomination}/",
        None,
        "tiers.view_nomination",
        "members:write",
        False,
        200,
    ),
    (
        "review nomination",
        "post",
        "/api/v1/nominations/{nomination}/review/",
        {"decision": "reject"},
        "tiers.change_nomination",
        None,
        False,
        200,
    ),
    (
        "withdraw nomination",
        "post",
        "/api/v1/nominations/{nomination}/withdrawal/",
        {},
        "tiers.change_nomination",
        "members:write",
        False,
        200,
    ),
    (
        "list rule sets",
        "get",
        "/api/v1/tier-rule-sets/",
        None,
        "tiers.view_ruleset",
        None,
        False,
        200,
    ),
    (
        "draft rule set",
        "post",
        "/api/v1/tier-rule-sets/",
        {"name": "Next"},
        "tiers.add_ruleset",
        None,
        False,
        201,
    ),
    (
        "read rule set",
        "get",
        "/api/v1/tier-rule-sets/{draft}/",
        None,
        "tiers.view_ruleset",
        None,
        False,
        200,
    ),
    (
        "edit draft rule set",
        "patch",
        "/api/v1/tier-rule-sets/{draft}/",
        {"name": "Renamed"},
        "tiers.change_ruleset",
        None,
        False,
        200,
    ),
    (
        "delete draft rule set",
        "delete",
        "/api/v1/tier-rule-sets/{draft}/",
        None,
        "tiers.delete_ruleset",
        None,
        False,
        204,
    ),
    (
        "publish rule set",
        "post",
        "/api/v1/tier-rule-sets/{draft}/publication/",
        {},
        "tiers.publish_ruleset",
        None,
        False,
        200,
    ),
    (
        "simulate rule set",
        "post",
        "/api/v1/tier-simulations/",
        {"rule_set": "{draft}"},
        "tiers.view_ruleset",
        None,
        False,
        200,
    ),
    (
        "list reassessments",
        "get",
        "/api/v1/tier-reassessments/",
        None,
        "tiers.view_tierchange",
        None,
        False,
        200,
    ),
    (
        "read reassessment",
        "get",
        "/api/v1/tier-reassessments/{job}/",
        None,
        "tiers.view_tierchange",
        None,
        False,
        200,
    ),
    (
        "start reassessment",
        "post",
        "/api/v1/tier-reassessments/",
        {},
        "tiers.run_reassessment",
        None,
        False,
        202,
    ),
    (
        "points balance",
        "get",
        "/api/v1/members/{id}/points/",
        None,
        "rewards.view_pointsentry",
        "members:read",
        True,
        200,
    ),
    (
        "points entries",
        "get",
        "/api/v1/members/{id}/points/entries/",
        None,
        "rewards.view_pointsentry",
        "members:read",
        True,
        200,
    ),
    (
        "award points",
        "post",
        "/api/v1/members/{id}/points/awards/",
        {"points": 5},
        "rewards.award_points",
        "points:award",
        False,
        201,
    ),
    (
        "deduct points",
        "post",
        "/api/v1/members/{id}/points/deductions/",
        {"points": 1},
        "rewards.deduct_points",
        None,
        False,
        201,
    ),
    (
        "award batch",
        "post",
        "/api/v1/points/award-batches/",
        {"items": [{"external_id": "member-self", "points": 1}]},
        "rewards.award_points",
        "points:award",
        False,
        200,
    ),
    (
        "list rewards",
        "get",
        "/api/v1/rewards/",
        None,
        None,
        "members:read",
        True,
        200,
    ),
    (
        "create reward",
        "post",
        "/api/v1/rewards/",
        {"name": "Mug", "points_cost": 5},
        "rewards.add_reward",
        None,
        False,
        201,
    ),
    (
        "read reward",
        "get",
        "/api/v1/rewards/{reward}/",
        None,
        None,
        "members:read",
        True,
        200,
    ),
    (
        "edit reward",
        "patch",
        "/api/v1/rewards/{reward}/",
        {"stock": 7},
        "rewards.change_reward",
        None,
        False,
        200,
    ),
    (
        "redeem reward",
        "post",
        "/api/v1/rewards/{reward}/redemptions/",
        {"member": "{id}"},
        "rewards.redeem_for_member",
        None,
        True,
        201,
    ),
    (
        "list redemptions",
        "get",
        "/api/v1/redemptions/",
        None,
        "rewards.view_redemption",
        None,
        True,
        200,
    ),
    (
        "read redemption",
        "get",
        "/api/v1/redemptions/{redemption}/",
        None,
        "rewards.view_redemption",
        None,
        True,
        200,
    ),
    (
        "cancel redemption",
        "patch",
        "/api/v1/redemptions/{redemption}/",
        {"status": "cancelled", "reason": "Changed mind"},
        "rewards.cancel_redemption",
        None,
        True,
        200,
    ),
    (
        "fulfil redemption",
        "patch",
        "/api/v1/redemptions/{redemption}/",
        {"status": "fulfilled"},
        "rewards.fulfil_redemption",
        None,
        False,
        200,
    ),
    (
        "benefit catalog",
        "get",
        "/api/v1/benefits/",
        None,
        None,
        "members:read",
        True,
        200,
    ),
    (
        "badge catalog",
        "get",
        "/api/v1/badges/",
        None,
        None,
        "members:read",
        True,
        200,
    ),
    (
        "member badges",
        "get",
        "/api/v1/members/{id}/badges/",
        None,
        "rewards.view_memberbadge",
        "members:read",
        True,
        200,
    ),
    (
        "award badge",
        "post",
        "/api/v1/members/{id}/badges/",
        {"badge": "community-hero"},
        "rewards.award_badge",
        "members:write",
        False,
        201,
    ),
    (
        "badge credential",
        "get",
        "/api/v1/members/{id}/badges/{badge}/credential/",
        None,
        "rewards.view_memberbadge",
        "members:read",
        True,
        200,
    ),
]

# The credential endpoints need a signing key (tests run with DEBUG off): any 32-byte seed.
CREDENTIAL_KEY = "ZGVtby1rZXktZm9yLXRoZS1hY2Nlc3MtbWF0cml4ISE="

# Placeholders naming the member themselves or something of theirs: another member gets 404.
OWNED = ("{id}", "{redemption}")


def _call(client: APIClient, method: str, path: str, body: dict | None):
    return (
        getattr(client, method)(path, body) if body is not None else getattr(client, method)(path)
    )


@pytest.fixture
def setup(settings, member, other_member, make_partner, make_operator_client):
    from django.utils import timezone

    from core.actors import Actor, ActorKind, system_actor
    from rewards.services.catalog import redemption_create, reward_create
    from rewards.services.honors import badge_award
    from rewards.services.ledger import points_award
    from tiers.services.promotions import nomination_create
    from tiers.services.reassessment import reassessment_run_inline, reassessment_start
    from tiers.services.rules import rule_set_draft_create

    now = timezone.now()
    settings.LOYALTY_CREDENTIAL_SIGNING_KEY = CREDENTIAL_KEY
    # A balance, so a permitted deduction succeeds.
    points_award(member=member, points=10, reason="manual", actor=system_actor("t"), at=now)
    shop, _ = make_partner("Shop", scopes=[])
    # The shop's own nomination (a partner sees only its own), a draft rule version and a
    # finished reassessment (so a new one may start).
    nomination = nomination_create(
        member=other_member,
        tier="kol",
        evidence="Ran meetups",
        evidence_urls=[],
        actor=Actor(kind=ActorKind.PARTNER, partner_id=shop.pk),
        at=now,
    )
    draft = rule_set_draft_create(actor=system_actor("t"), at=now)
    job, _ = reassessment_start(actor=system_actor("t"), at=now)
    reassessment_run_inline(job_id=job.pk, at=now)
    # A reward and the member's own redemption of it (1 of their 10 points).
    reward = reward_create(name="Pin", points_cost=1, actor=system_actor("t"), at=now)
    redemption = redemption_create(member=member, reward=reward, actor=system_actor("t"), at=now)
    # A badge the member holds, for its credential (not the one "award badge" awards).
    badge_award(member=member, code="streak-7", actor=system_actor("t"), at=now)
    return {
        "member": member,
        "other": other_member,
        "shop": shop,
        "ids": {
            "id": member.pk,
            "nomination": nomination.pk,
            "draft": draft.pk,
            "job": job.pk,
            "reward": reward.pk,
            "redemption": redemption.pk,
            "badge": "streak-7",
        },
    }


def _fill(body: dict | None, ids: dict) -> dict | None:
    if body is None:
        return None
    return {
        key: value.format(**ids) if isinstance(value, str) else value for key, value in body.items()
    }


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[endpoint[0] for endpoint in ENDPOINTS])
@pytest.mark.parametrize(
    "role",
    [
        "anonymous",
        "member self",
        "member other",
        "operator with permission",
        "operator without permission",
        "partner with scope",
        "partner without scope",
    ],
)
def test_access(setup, make_operator_client, role, endpoint):
    label, method, template, body, permission, scope, member_may, ok = endpoint
    member, other = setup["member"], setup["other"]
    path = template.format(**setup["ids"])
    body = _fill(body, setup["ids"])
    client: APIClient
    expected: int
    if role == "anonymous":
        client, expected = APIClient(), 401
    elif role == "member self":
        client = _member_client(member)
        expected = ok if member_may else 403
    elif role == "member other":
        client = _member_client(other)
        owned = any(mark in template or mark in str(endpoint[3]) for mark in OWNED)
        expected = (404 if owned else ok) if member_may else 403
    elif role == "operator with permission":
        client = make_operator_client(*([permission] if permission else []))
        expected = ok
    elif role == "operator without permission":
        client = make_operator_client()
        expected = 403 if permission else ok
    elif role == "partner with scope":
        from core.models import Partner

        Partner.objects.filter(pk=setup["shop"].pk).update(scopes=[scope] if scope else [])
        client = _partner_client(setup["shop"])
        expected = ok if scope else 403
    else:
        from core.models import Partner

        Partner.objects.filter(pk=setup["shop"].pk).update(
            scopes=[s for s in ALL_SCOPES if s != scope]
        )
        client = _partner_client(setup["shop"])
        expected = 403

    response = _call(client, method, path, body)

    assert response.status_code == expected, (label, role, response.content[:300])
    if expected >= 400:
        assert response["Content-Type"].startswith("application/problem+json")


def _member_client(member) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {member_token_pair(member.pk)['access']}")
    return client


def _partner_client(partner) -> APIClient:
    from core.services import partner_key_issue

    key = partner_key_issue(partner=partner, name="test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


def test_member_cannot_read_another_members_id_even_when_it_exists(member, other_member):
    client = _member_client(member)

    for path in ("", "identities/", "tags/", "tags/shop/", "tier/", "tier-history/"):
        response = client.get(f"/api/v1/members/{other_member.pk}/{path}")
        assert response.status_code == 404, path


def test_member_cannot_set_tier_or_lifecycle_on_themselves(member):
    client = _member_client(member)

    response = client.patch("/api/v1/me/", {"tier": "kol", "lifecycle_stage": "active"})

    assert response.status_code == 400
    member.refresh_from_db()
    assert (member.tier_id, member.lifecycle_stage) == ("basic", "new")


def test_member_edits_own_display_name_and_recognition(member):
    client = _member_client(member)

    response = client.patch("/api/v1/me/", {"display_name": "Me", "public_recognition": True})

    assert response.status_code == 200
    member.refresh_from_db()
    assert (member.display_name, member.public_recognition) == ("Me", True)


def test_partner_and_operator_have_no_me(partner_client, operator_client):
    for path in ("/api/v1/me/", "/api/v1/me/tier/"):
        assert partner_client.get(path).status_code == 403
        assert operator_client.get(path).status_code == 403


def test_the_honors_wall_is_public(member, make_partner, make_operator_client):
    clients = {
        "anonymous": APIClient(),
        "member": _member_client(member),
        "operator without permission": make_operator_client(),
        "partner without scope": make_partner("Wall", scopes=[])[1],
    }

    statuses = {
        role: client.get("/api/v1/honors/wall/").status_code for role, client in clients.items()
    }

    assert statuses == dict.fromkeys(clients, 200)


def test_the_me_badge_credential_is_the_members_own(
    settings, member, other_member, make_partner, make_operator_client
):
    from django.utils import timezone

    from core.actors import system_actor
    from rewards.services.honors import badge_award

    settings.LOYALTY_CREDENTIAL_SIGNING_KEY = CREDENTIAL_KEY
    badge_award(member=member, code="streak-7", actor=system_actor("t"), at=timezone.now())
    path = "/api/v1/me/badges/streak-7/credential/"
    clients = {
        "anonymous": APIClient(),
        "member self": _member_client(member),
        "member other": _member_client(other_member),
        "operator with permission": make_operator_client("rewards.view_memberbadge"),
        "partner with scope": make_partner("Me", scopes=["members:read"])[1],
    }

    statuses = {role: client.get(path).status_code for role, client in clients.items()}

    # Another member's /me/ is their own, where they hold no such badge: 404.
    assert statuses == {
        "anonymous": 401,
        "member self": 200,
        "member other": 404,
        "operator with permission": 403,
        "partner with scope": 403,
    }
