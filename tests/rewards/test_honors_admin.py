"""The admin for capability, benefits and honors: member actions (award a badge, grant a
certification), revoking grants, editing benefits (the multiplier lives on the tier) and badges."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.utils import timezone

from bulk.models import BulkItem
from core.actors import system_actor
from rewards.models import Badge, CertificationGrant, MemberBadge
from rewards.services.certifications import certification_grant
from tiers.models import Tier

pytestmark = pytest.mark.django_db

MEMBERS = "/admin/members/member/"
ACTOR = system_actor("tests")


def _messages(response):
    return [str(message) for message in get_messages(response.wsgi_request)]


def _operator(client, *perms):
    user = User.objects.create_user(f"op-{User.objects.count()}", is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client.force_login(user)
    return user


def _action_names(response):
    return [name for name, _ in response.context["action_form"].fields["action"].choices]


def test_the_member_actions_need_their_permissions(client) -> None:
    _operator(client, "members.view_member")
    plain = _action_names(client.get(MEMBERS))
    _operator(client, "members.view_member", "rewards.award_badge", "rewards.grant_certification")
    allowed = _action_names(client.get(MEMBERS))

    assert {"award_badge", "grant_certification"} & set(plain) == set()
    assert {"award_badge", "grant_certification"} <= set(allowed)


def test_award_a_badge_to_selected_members(client, make_member) -> None:
    first, second = make_member(), make_member()
    _operator(client, "members.view_member", "rewards.award_badge")
    selection = {"action": "award_badge", "_selected_action": [str(first.pk), str(second.pk)]}
    client.post(
        MEMBERS,
        {**selection, "apply": "1", "badge": "community-hero", "reason": "Meetup"},
    )

    page = client.post(MEMBERS, selection)
    response = client.post(
        MEMBERS, {**selection, "apply": "1", "badge": "community-hero", "reason": "Again"}
    )

    assert page.status_code == 200
    assert MemberBadge.objects.filter(badge="community-hero").count() == 2
    assert set(MemberBadge.objects.values_list("reason", flat=True)) == {"Meetup"}
    assert _messages(response) == ["Award a badge: 2 already held."]


def test_grant_a_certification_to_selected_members_reports_refusals(
    client, make_member, django_capture_on_commit_callbacks
) -> None:
    ready, unready = make_member("ready"), make_member("unready")
    certification_grant(member=ready, code="onboarding", actor=ACTOR, at=timezone.now())
    _operator(client, "members.view_member", "rewards.grant_certification")

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            MEMBERS,
            {
                "action": "grant_certification",
                "_selected_action": [str(ready.pk), str(unready.pk)],
                "apply": "1",
                "certification": "content-creator",
                "evidence": "Course passed",
            },
        )

    assert CertificationGrant.objects.filter(certification="content-creator").count() == 1
    assert CertificationGrant.objects.get(certification="content-creator").member_id == ready.pk
    # A background job (bulk app): the refusal is the unready member's failed item.
    assert _messages(response) == [
        "Grant a certification: started a background job for 2 member(s)."
    ]
    assert BulkItem.objects.get(member=unready).outcome == "prerequisite_missing"


def test_revoke_selected_grants(client, make_member) -> None:
    member = make_member()
    grant = certification_grant(
        member=member, code="onboarding", actor=ACTOR, at=timezone.now()
    ).grant
    _operator(client, "rewards.view_certificationgrant", "rewards.revoke_certification")

    client.post(
        "/admin/rewards/certificationgrant/",
        {"action": "revoke", "_selected_action": [str(grant.pk)], "apply": "1", "reason": "Lapsed"},
    )

    grant.refresh_from_db()
    assert (grant.revoked_at is not None, grant.revoke_reason) == (True, "Lapsed")


def test_editing_the_multiplier_benefit_sets_the_tiers_multiplier(admin_client) -> None:
    url = "/admin/rewards/benefit/koc-points-multiplier/change/"
    form = admin_client.get(url)

    response = admin_client.post(
        url,
        {
            "tier": "koc",
            "kind": "points_multiplier",
            "name": "Points multiplier",
            "value": "",
            "points_multiplier": "1.35",
            "description": "More points",
            "exclusive_to_tier": "on",
            "is_active": "on",
        },
    )

    assert form.context["adminform"].form["points_multiplier"].initial == Decimal("1.25")
    assert response.status_code == 302
    assert Tier.objects.get(pk="koc").points_multiplier == Decimal("1.35")


def test_a_badge_with_a_bad_rule_is_refused(admin_client) -> None:
    response = admin_client.post(
        "/admin/rewards/badge/add/",
        {
            "code": "helper",
            "name": "Helper",
            "kind": "automatic",
            "rule": "helped_twice",
            "level": "1",
            "is_active": "on",
        },
    )

    assert response.status_code == 200
    assert "Unknown badge rule" in response.content.decode()
    assert not Badge.objects.filter(pk="helper").exists()
