"""Earning rules (multiplier, caps, velocity, minimum tier) and the daily check-in."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection, transaction
from django.utils import timezone

from core.actors import system_actor
from members.models import Member
from rewards.models import CheckIn, DailyEarning, EarningRule, PointsEntry
from rewards.selectors import ledger_violations
from rewards.services.earning import (
    AwardOutcome,
    EventForAward,
    award_for_event,
    checkin_create,
    earning_decide,
    event_points,
    events_award_batch,
)

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
    entry = PointsEntry.objects.select_related("lot").get(pk=result.entry_id)
    assert entry.lot.pending_until == now + timedelta(days=14)
    assert entry.reason == "purchase"


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


# --- One decision for single and batch awards --------------------------------------------------


def _rule(**fields):
    return EarningRule(event_type="x", **{"points": 20, **fields})


@pytest.mark.parametrize(
    ("rule", "tier_rank", "min_tier_rank", "earned_today", "last_hour", "expected"),
    [
        (None, 0, None, 0, 0, (AwardOutcome.NO_RULE, 0)),
        (_rule(), 0, 1, 0, 0, (AwardOutcome.BELOW_MIN_TIER, 0)),
        (_rule(), 1, 1, 0, 0, (AwardOutcome.AWARDED, 25)),
        (_rule(per_currency_unit=True), 0, None, 0, 0, (AwardOutcome.ZERO_POINTS, 0)),
        (_rule(hourly_limit=3), 0, None, 0, 2, (AwardOutcome.AWARDED, 25)),
        (_rule(hourly_limit=3), 0, None, 0, 3, (AwardOutcome.VELOCITY_LIMITED, 0)),
        (_rule(daily_cap=60), 0, None, 50, 0, (AwardOutcome.AWARDED, 10)),
        (_rule(daily_cap=60), 0, None, 60, 0, (AwardOutcome.CAPPED, 0)),
        (_rule(daily_cap=0), 0, None, 0, 0, (AwardOutcome.CAPPED, 0)),
        (_rule(points=10**9), 0, None, 0, 0, (AwardOutcome.AWARDED, 1000)),
    ],
)
def test_earning_decide(rule, tier_rank, min_tier_rank, earned_today, last_hour, expected):
    decision = earning_decide(
        rule=rule,
        tier_rank=tier_rank,
        min_tier_rank=min_tier_rank,
        multiplier=Decimal("1.25"),
        amount=None,
        max_points=1000,
        earned_today=earned_today,
        awarded_last_hour=last_hour,
    )

    assert (decision.outcome, decision.points) == expected


SEQUENCE = [
    # (event type, minutes after the first, amount)
    ("post", 0, None),
    ("like", 1, None),
    ("post", 2, None),
    ("post", 3, None),
    ("like", 4, None),
    ("post", 5, None),
    ("like", 6, None),
    ("share", 7, None),
    ("purchase", 8, Decimal("80.90")),
    ("post", 9, None),
]


def test_batch_awards_decide_like_single_awards(make_member, audited):
    EarningRule.objects.filter(event_type="post").update(daily_cap=90, hourly_limit=None)
    EarningRule.objects.filter(event_type="like").update(daily_cap=None, hourly_limit=2)
    EarningRule.objects.filter(event_type="share").update(min_tier_id="kol")
    single, batch = make_member("single"), make_member("batch")
    Member.objects.filter(pk__in=[single.pk, batch.pk]).update(tier_id="koc")  # 1.25
    single.refresh_from_db()
    start = timezone.now()

    one_by_one = [
        _award(single, kind, f"{kind}:s:{n}", at=start + timedelta(minutes=m), amount=amount)
        for n, (kind, m, amount) in enumerate(SEQUENCE)
    ]
    with transaction.atomic():
        together = events_award_batch(
            items=[
                EventForAward(batch.pk, kind, f"b:{n}", start + timedelta(minutes=m), amount)
                for n, (kind, m, amount) in enumerate(SEQUENCE)
            ],
            actor=ACTOR,
            at=start + timedelta(minutes=10),
        )

    assert [(a.outcome, a.points) for a in one_by_one] == [
        (AwardOutcome.AWARDED, 25),
        (AwardOutcome.AWARDED, 1),
        (AwardOutcome.AWARDED, 25),
        (AwardOutcome.AWARDED, 25),
        (AwardOutcome.AWARDED, 1),
        (AwardOutcome.AWARDED, 15),
        (AwardOutcome.VELOCITY_LIMITED, 0),
        (AwardOutcome.BELOW_MIN_TIER, 0),
        (AwardOutcome.AWARDED, 100),
        (AwardOutcome.CAPPED, 0),
    ]
    assert [(a.outcome, a.points) for a in together] == [(a.outcome, a.points) for a in one_by_one]
    assert sorted(
        DailyEarning.objects.filter(member=batch).values_list(
            "event_type", "points", "awards_count"
        )
    ) == sorted(
        DailyEarning.objects.filter(member=single).values_list(
            "event_type", "points", "awards_count"
        )
    )


def test_batch_awards_are_a_fixed_number_of_queries(make_member, django_assert_num_queries):
    members = [make_member(f"q-{n}") for n in range(30)]
    now = timezone.now()
    items = [
        EventForAward(member.pk, kind, f"q:{member.pk}:{kind}", now)
        for member in members
        for kind in ("post", "like")
    ]

    # PostgreSQL posts entries, lots, events, accounts and shards in one statement; SQLite writes
    # entries, lots, events, accounts and shards with one statement each.
    expected = 11 if connection.vendor == "postgresql" else 15

    with transaction.atomic(), django_assert_num_queries(expected):
        awards = events_award_batch(items=items, actor=ACTOR, at=now)

    assert {award.outcome for award in awards} == {AwardOutcome.AWARDED}
    assert ledger_violations() == []


def test_a_batch_repeating_a_reference_awards_it_once(member, audited):
    now = timezone.now()

    with transaction.atomic():
        awards = events_award_batch(
            items=[EventForAward(member.pk, "post", "same", now)] * 2, actor=ACTOR, at=now
        )

    assert [a.outcome for a in awards] == [AwardOutcome.AWARDED, AwardOutcome.DUPLICATE]
    assert PointsEntry.objects.filter(member=member).count() == 1
