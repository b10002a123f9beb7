"""Benefits attached to tier rungs: a member has their rung's and the lower rungs' (but those
exclusive to a lower rung); the points multiplier shown is the one the earning rules apply."""

from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from core.actors import system_actor
from core.exceptions import InvalidInputError
from members.models import Member
from rewards.models import Benefit, BenefitKind
from rewards.selectors import benefit_catalog, member_benefit_kinds, member_benefits
from rewards.services.earning import checkin_create
from rewards.services.honors import benefit_save
from tiers.models import Tier
from tiers.services.promotions import tier_promote

pytestmark = pytest.mark.django_db

ACTOR = system_actor("tests")


def _at_tier(make_member, tier: str) -> Member:
    member = make_member()
    if tier != "basic":
        with transaction.atomic():
            tier_promote(member=member, tier=tier, reason="tests", actor=ACTOR, at=timezone.now())
    return Member.objects.get(pk=member.pk)


def _extra(code: str, tier: str, kind: str, *, exclusive: bool = False) -> None:
    at = timezone.now()
    Benefit.objects.create(
        code=code,
        tier_id=tier,
        kind=kind,
        name=code,
        exclusive_to_tier=exclusive,
        created_at=at,
        updated_at=at,
    )


def test_a_koc_has_the_benefits_of_basic_active_and_koc_but_lower_exclusive_ones(
    make_member,
) -> None:
    _extra("basic-welcome-trial", "basic", BenefitKind.NEW_PRODUCT_TRIAL)
    _extra("active-support", "active", BenefitKind.PRIORITY_SUPPORT)
    _extra("kol-only-events", "kol", BenefitKind.EXCLUSIVE_EVENTS)
    koc = _at_tier(make_member, "koc")

    rows = member_benefits(member=koc)

    assert [(row.tier, row.code) for row in rows] == [
        ("basic", "basic-welcome-trial"),
        ("active", "active-support"),
        ("koc", "koc-monthly-coupons"),
        ("koc", "koc-new-product-trials"),
        ("koc", "koc-points-multiplier"),
        ("koc", "koc-priority-support"),
    ]
    by_code = {row.code: row for row in rows}
    assert by_code["koc-monthly-coupons"].value == Decimal("2.00")
    assert by_code["koc-points-multiplier"].value == Decimal("1.25")


@pytest.mark.parametrize(
    ("tier", "kinds"),
    [
        ("basic", set()),
        ("active", {"points_multiplier", "monthly_coupon_allowance"}),
        (
            "kol",
            {
                "points_multiplier",
                "monthly_coupon_allowance",
                "new_product_trial",
                "priority_support",
                "exclusive_events",
                "dedicated_advisor",
                "cocreation_committee_seat",
            },
        ),
    ],
)
def test_benefits_grow_with_the_tier(make_member, tier, kinds) -> None:
    member = _at_tier(make_member, tier)

    assert member_benefit_kinds(member_id=member.pk) == kinds


def test_inactive_benefits_are_not_given(make_member) -> None:
    Benefit.objects.filter(code="koc-priority-support").update(is_active=False)
    kol = _at_tier(make_member, "kol")

    assert "priority_support" not in member_benefit_kinds(member_id=kol.pk)


def test_every_multiplier_benefit_shows_what_earning_applies() -> None:
    shown = {
        row.tier: row.value
        for _, rows in benefit_catalog()
        for row in rows
        if row.kind == BenefitKind.POINTS_MULTIPLIER
    }

    assert shown == dict(Tier.objects.filter(rank__gt=0).values_list("code", "points_multiplier"))
    assert shown == {"active": Decimal("1.10"), "koc": Decimal("1.25"), "kol": Decimal("1.50")}


def test_saving_the_multiplier_benefit_changes_what_members_earn(make_member) -> None:
    koc = _at_tier(make_member, "koc")
    benefit = Benefit.objects.get(code="koc-points-multiplier")

    benefit_save(benefit=benefit, points_multiplier=Decimal("1.40"), actor=ACTOR, at=timezone.now())
    result = checkin_create(member=koc, actor=ACTOR, at=timezone.now())

    assert Tier.objects.get(pk="koc").points_multiplier == Decimal("1.40")
    assert {row.code: row.value for row in member_benefits(member=koc)}[
        "koc-points-multiplier"
    ] == Decimal("1.40")
    assert result.check_in.points_awarded == 7  # floor(5 x 1.40), as the benefit says


def test_benefit_save_refuses_what_would_make_the_benefit_lie() -> None:
    benefit = Benefit.objects.get(code="koc-points-multiplier")
    coupons = Benefit.objects.get(code="koc-monthly-coupons")
    benefit.is_active = False

    with pytest.raises(InvalidInputError):
        benefit_save(benefit=benefit, points_multiplier=None, actor=ACTOR, at=timezone.now())
    with pytest.raises(InvalidInputError):  # hidden, yet still paid
        benefit_save(
            benefit=benefit, points_multiplier=Decimal("1.25"), actor=ACTOR, at=timezone.now()
        )
    with pytest.raises(InvalidInputError):
        benefit_save(
            benefit=coupons, points_multiplier=Decimal("2"), actor=ACTOR, at=timezone.now()
        )

    assert Tier.objects.get(pk="koc").points_multiplier == Decimal("1.25")
    assert Benefit.objects.get(code="koc-points-multiplier").is_active is True


def test_the_benefit_catalog_lists_every_tier_lowest_first(api_client_any) -> None:
    response = api_client_any.get("/api/v1/benefits/")

    assert response.status_code == 200
    body = response.json()
    assert [tier["tier"] for tier in body] == ["basic", "active", "koc", "kol"]
    assert body[0]["benefits"] == []
    assert {benefit["code"]: benefit["value"] for benefit in body[2]["benefits"]} == {
        "koc-monthly-coupons": "2.00",
        "koc-new-product-trials": None,
        "koc-points-multiplier": "1.25",
        "koc-priority-support": None,
    }


@pytest.fixture
def api_client_any(member_client):
    return member_client
