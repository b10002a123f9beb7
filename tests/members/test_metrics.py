"""The metrics selector against hand-computed values over 7, 30 and 90-day windows."""

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from core.actors import system_actor
from members.models import MemberDailyActivity
from members.selectors import METRIC_NAMES, MemberMetrics, member_metrics_list
from rewards.services.ledger import points_award, points_reverse

AS_OF = date(2026, 6, 30)
SHANGHAI = ZoneInfo("Asia/Shanghai")
ACTOR = system_actor("tests")


def _day(days_ago):
    return AS_OF - timedelta(days=days_ago)


def _at(days_ago, hour=12, minute=0, second=0):
    """A moment on a business day (Shanghai), as an aware datetime."""
    return datetime.combine(_day(days_ago), time(hour, minute, second), tzinfo=SHANGHAI)


def _rollup(member, days_ago, **counts):
    MemberDailyActivity.objects.create(member=member, business_date=_day(days_ago), **counts)


@pytest.fixture
def ann(make_member):
    """Activity on the edges of each window: 0, 6 | 7, 29 | 30, 89 | 90 days before as_of."""
    ann = make_member("ann", at=_at(120))
    _rollup(ann, 0, interactions=2, posts=1, shares=1)
    _rollup(ann, 6, interactions=3, posts=3, purchases=1, purchase_amount=Decimal("10.50"))
    _rollup(ann, 7, interactions=4, posts=2)
    _rollup(ann, 29, interactions=0, logins=1, purchases=2, purchase_amount=Decimal("5.25"))
    _rollup(ann, 30, interactions=5, shares=5)
    _rollup(ann, 89, interactions=1, posts=1)
    _rollup(ann, 90, interactions=100, posts=100, purchases=100)
    _rollup(ann, -1, interactions=100, posts=100)  # after as_of: never counted
    return ann


@pytest.mark.parametrize(
    ("window_days", "expected"),
    [
        (1, MemberMetrics(interactions=2, active_days=1, posts=1, shares=1)),
        (
            7,
            MemberMetrics(
                interactions=5,
                active_days=2,
                posts=4,
                shares=1,
                purchases=1,
                purchase_amount=Decimal("10.50"),
            ),
        ),
        (
            30,
            MemberMetrics(
                interactions=9,
                active_days=3,
                posts=6,
                shares=1,
                purchases=3,
                purchase_amount=Decimal("15.75"),
            ),
        ),
        (
            90,
            MemberMetrics(
                interactions=15,
                active_days=5,
                posts=7,
                shares=6,
                purchases=3,
                purchase_amount=Decimal("15.75"),
            ),
        ),
    ],
)
def test_window_sums_include_exactly_the_window_days(ann, window_days, expected):
    metrics = member_metrics_list(member_ids=[ann.pk], as_of=AS_OF, window_days=window_days)

    assert metrics == {ann.pk: MemberMetrics(**{**_as_dict(expected), "tenure_days": 120})}


def _as_dict(metrics):
    return {name: metrics.value(name) for name in METRIC_NAMES}


def test_qualifying_points_count_earns_on_the_window_business_days_less_reversals(make_member):
    ann = make_member("ann", at=_at(200))
    award = points_award
    award(member=ann, points=10, reason="event", actor=ACTOR, at=_at(0, 23, 59, 59))
    award(member=ann, points=20, reason="event", actor=ACTOR, at=_at(6, 0, 0, 0))
    award(member=ann, points=40, reason="event", actor=ACTOR, at=_at(7, 23, 59, 59))
    refunded = award(member=ann, points=80, reason="purchase", actor=ACTOR, at=_at(3))
    points_reverse(entry=refunded, actor=ACTOR, at=_at(2))
    award(member=ann, points=160, reason="event", actor=ACTOR, at=_at(-1, 0, 0, 0))

    by_window = {
        days: member_metrics_list(member_ids=[ann.pk], as_of=AS_OF, window_days=days)[
            ann.pk
        ].qualifying_points
        for days in (1, 7, 8, 30)
    }

    assert by_window == {1: 10, 7: 30, 8: 70, 30: 70}


def test_checkin_streak_ends_today_or_yesterday_and_is_capped_by_the_window(make_member):
    today = make_member("today", at=_at(60))
    yesterday = make_member("yesterday", at=_at(60))
    lapsed = make_member("lapsed", at=_at(60))
    long_run = make_member("long", at=_at(60))
    for days_ago in (0, 1, 2, 4):
        _rollup(today, days_ago, checkins=1, interactions=1)
    for days_ago in (1, 2, 3):
        _rollup(yesterday, days_ago, checkins=1, interactions=1)
    _rollup(yesterday, 0, posts=1, interactions=1)  # a day without a check-in (yet)
    for days_ago in (2, 3):
        _rollup(lapsed, days_ago, checkins=1, interactions=1)
    for days_ago in range(12):
        _rollup(long_run, days_ago, checkins=1, interactions=1)

    metrics = member_metrics_list(
        member_ids=[today.pk, yesterday.pk, lapsed.pk, long_run.pk], as_of=AS_OF, window_days=7
    )

    assert {pk: m.checkin_streak for pk, m in metrics.items()} == {
        today.pk: 3,
        yesterday.pk: 3,
        lapsed.pk: 0,
        long_run.pk: 7,
    }


def test_members_without_activity_get_zeros_and_tenure(make_member):
    joined_today = make_member("new", at=datetime(2026, 6, 29, 16, 30, tzinfo=UTC))  # 00:30 CST
    joined_later = make_member("later", at=datetime(2026, 7, 2, tzinfo=UTC))

    metrics = member_metrics_list(
        member_ids=[joined_today.pk, joined_later.pk], as_of=AS_OF, window_days=30
    )

    assert metrics == {joined_today.pk: MemberMetrics(), joined_later.pk: MemberMetrics()}


def test_metrics_for_many_members_take_three_queries(make_member, django_assert_num_queries):
    members = [make_member(f"m-{n}", at=_at(10)) for n in range(20)]
    for member in members:
        _rollup(member, 1, checkins=1, interactions=1, posts=1)

    with django_assert_num_queries(3):
        metrics = member_metrics_list(
            member_ids=[m.pk for m in members], as_of=AS_OF, window_days=30
        )

    assert {m.posts for m in metrics.values()} == {1}
    assert len(metrics) == 20


def test_window_must_be_positive(make_member):
    with pytest.raises(ValueError, match="window_days"):
        member_metrics_list(member_ids=[], as_of=AS_OF, window_days=0)
