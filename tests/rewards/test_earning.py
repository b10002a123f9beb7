"""Earning rules (multiplier, caps, velocity, minimum tier) and the daily check-in."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import transaction
from django.utils import timezone

from core.actors import system_actor
from members.models import Member
from rewards.models import CheckIn, EarningRule, PointsEntry
from rewards.services.earning import AwardOutcome, award_for_event, checkin_create, event_points

ACTOR = system_actor("tests")


def _award(member, event_type, reference, at=None, amount=None):
    with transaction.atomic():
        return award_for_event(
            member=member,
            event_type=event_type,
            reference=reference,
            actor=ACTOR,
            at=at or timezone.now(),
            amount=amount,
        )


@pytest.mark.parametrize(
    ("points", "per_unit", "multiplier", "amount", "expected"),
    [
        (20, False, Decimal("1.00"), None, 20),
        (20, False, Decimal("1.25"), None, 25),
        (5, False, Decimal("1.10"), None, 5),  # 5.5 floored
        (1, True, Decimal("1.00"), Decimal("99.99"), 99),  # per whole currency unit
        (1, True, Decimal("1.50"), Decimal("3"), 4),  # 4.5 floored
        (1, True, Decimal("1.00"), None, 0),
    ],
)
def test_event_points_are_floored(points, per_unit, multiplier, amount, expected):
    rule = EarningRule(event_type="x", points=points, per_currency_unit=per_unit)

    assert event_points(rule=rule, multiplier=multiplier, amount=amount) == expected


def test_tier_multiplier_applies(member, audited):
    Member.objects.filter(pk=member.pk).update(tier_id="koc")
    member.refresh_from_db()

    result = _award(member, "post", "post:s:1")

    assert (result.outcome, result.points) == (AwardOutcome.AWARDED, 25)


def test_daily_cap_clamps_the_last_award_and_resets_next_business_day(member, audited):
    EarningRule.objects.filter(event_type="post").update(daily_cap=50, hourly_limit=None)
    now = timezone.now()

    results = [_award(member, "post", f"post:s:{n}", at=now) for n in range(4)]
    tomorrow = _award(member, "post", "post:s:9", at=now + timedelta(days=1))

    assert [(r.outcome, r.points) for r in results] == [
        (AwardOutcome.AWARDED, 20),
        (AwardOutcome.AWARDED, 20),
        (AwardOutcome.AWARDED, 10),
        (AwardOutcome.CAPPED, 0),
    ]
    assert tomorrow.points == 20


def test_velocity_limit_per_hour(member, audited):
    EarningRule.objects.filter(event_type="like").update(hourly_limit=2, daily_cap=None)
    now = timezone.now()

    outcomes = [_award(member, "like", f"like:s:{n}", at=now).outcome for n in range(3)]
    later = _award(member, "like", "like:s:9", at=now + timedelta(hours=1, seconds=1)).outcome

    assert outcomes == [AwardOutcome.AWARDED, AwardOutcome.AWARDED, AwardOutcome.VELOCITY_LIMITED]
    assert later == AwardOutcome.AWARDED


def test_min_tier_no_rule_duplicate(member, audited):
    EarningRule.objects.filter(event_type="share").update(min_tier_id="active")

    below = _award(member, "share", "share:s:1")
    unknown = _award(member, "dance", "dance:s:1")
    first = _award(member, "post", "post:s:1")
    again = _award(member, "post", "post:s:1")

    assert below.outcome == AwardOutcome.BELOW_MIN_TIER
    assert unknown.outcome == AwardOutcome.NO_RULE
    assert first.outcome == AwardOutcome.AWARDED
    assert again.outcome == AwardOutcome.DUPLICATE
    assert PointsEntry.objects.count() == 1


def test_purchase_points_are_pending_for_the_return_window(member, audited):
    now = timezone.now()

    result = _award(member, "purchase", "purchase:shop:o-1", at=now, amount=Decimal("120.50"))

    assert result.points == 120
    assert result.entry.lot.pending_until == now + timedelta(days=14)
    assert result.entry.reason == "purchase"


CHECKINS = "/api/v1/me/check-ins/"


def test_check_in_once_a_day_with_streak(member, audited):
    from rest_framework.test import APIClient

    from core.api.tokens import member_token_pair

    with time_machine.travel("2026-05-01 02:00:00+00:00", tick=False):
        member_client = APIClient()
        member_client.credentials(
            HTTP_AUTHORIZATION=f"Bearer {member_token_pair(member.pk)['access']}"
        )
        first = member_client.post(CHECKINS)
        repeat = member_client.post(CHECKINS)

    assert first.status_code == 201
    assert first.json()["points_awarded"] == 5
    assert first.json()["streak"] == 1
    assert repeat.status_code == 200
    assert repeat.json() == first.json()
    assert PointsEntry.objects.filter(member=member).count() == 1


def test_check_in_days_follow_shanghai_midnight(member, audited):
    # 15:59:59 UTC is 23:59:59 in Shanghai; 16:00:01 UTC is the next Shanghai day.
    at_before = timezone.datetime.fromisoformat("2026-05-01T15:59:59+00:00")
    at_after = timezone.datetime.fromisoformat("2026-05-01T16:00:01+00:00")

    first = checkin_create(member=member, actor=ACTOR, at=at_before)
    second = checkin_create(member=member, actor=ACTOR, at=at_after)
    skipped = checkin_create(member=member, actor=ACTOR, at=at_after + timedelta(days=2))

    assert str(first.check_in.business_date) == "2026-05-01"
    assert str(second.check_in.business_date) == "2026-05-02"
    assert second.check_in.streak == 2
    assert skipped.check_in.streak == 1
    assert CheckIn.objects.filter(member=member).count() == 3
