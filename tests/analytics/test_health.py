"""The community health index and its alert thresholds at their edges."""

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest

from analytics.selectors import health
from members.models import LifecycleStage, Member
from tests.analytics.conftest import NOW, erased, local

Person = Callable[..., Member]
ActiveOn = Callable[..., None]

WEEK = date(2026, 3, 9)  # the last complete week: 03-09..03-15
PREVIOUS_WEEK = date(2026, 3, 2)


def _population(person: Person, size: int = 10) -> list[Member]:
    """``size`` members who interacted yesterday (none silent)."""
    return [
        person(
            last_interaction_at=NOW - timedelta(days=1), last_activity_at=NOW - timedelta(days=1)
        )
        for _ in range(size)
    ]


def _codes(result: Any) -> list[str]:
    return [alert.code for alert in result.alerts]


@pytest.fixture
def thresholds(settings: Any) -> Any:
    settings.LOYALTY_HEALTH_POST_DENSITY_DROP = 0.20
    settings.LOYALTY_HEALTH_MIN_SHARES_PER_DAY = 5.0
    settings.LOYALTY_HEALTH_SILENT_DAYS = 30
    settings.LOYALTY_HEALTH_MAX_SILENT_SHARE = 0.5
    return settings


def test_health_index_hand_computed(person: Person, active_on: ActiveOn, thresholds: Any) -> None:
    members = _population(person, 10)
    # Posts: 10 in the previous week, 8 in the last complete week, 50 this week (not counted).
    active_on(members[0], PREVIOUS_WEEK, posts=6)
    active_on(members[1], date(2026, 3, 8), posts=4)
    active_on(members[0], WEEK, posts=5)
    active_on(members[1], date(2026, 3, 15), posts=3)
    active_on(members[2], date(2026, 3, 16), posts=50)
    # Shares over 03-11..03-17: 35 = 5 a day. The 10th and today are outside the 7 days.
    active_on(members[3], date(2026, 3, 11), shares=20)
    active_on(members[3], date(2026, 3, 17), shares=15)
    active_on(members[4], date(2026, 3, 10), shares=100)
    active_on(members[4], date(2026, 3, 18), shares=100)
    # Lifecycle stages, and an erased member who is silent and dormant (not counted).
    Member.objects.filter(pk__in=[m.pk for m in members[:2]]).update(
        lifecycle_stage=LifecycleStage.SILENT
    )
    Member.objects.filter(pk=members[2].pk).update(lifecycle_stage=LifecycleStage.DORMANT)
    gone = person(lifecycle_stage=LifecycleStage.DORMANT)
    erased(gone)
    Member.objects.filter(pk=gone.pk).update(lifecycle_stage=LifecycleStage.DORMANT)

    result = health(at=NOW)

    assert result.week_start == WEEK
    assert result.population == 10
    assert (result.previous_posts, result.posts) == (10, 8)
    assert result.previous_post_density == pytest.approx(100.0)
    assert result.post_density == pytest.approx(80.0)
    assert result.post_density_change == pytest.approx(-0.2)
    assert result.shares_per_day == pytest.approx(5.0)
    assert (result.silent_count, result.dormant_count, result.silent_30d_count) == (2, 1, 0)
    assert _codes(result) == ["post_density_drop"]
    alert = result.alerts[0]
    assert (alert.value, alert.threshold) == (pytest.approx(0.2), pytest.approx(0.2))
    assert "20.0%" in alert.message


@pytest.mark.parametrize(
    ("previous_posts", "posts", "alerts"),
    [
        pytest.param(1000, 800, True, id="down exactly 20% alerts"),
        pytest.param(1000, 801, False, id="down 19.9% does not"),
        pytest.param(1000, 700, True, id="down 30% alerts"),
        pytest.param(1000, 1200, False, id="up does not"),
        pytest.param(0, 5, False, id="no previous posts: no change, no alert"),
    ],
)
def test_post_density_drop_alert_edges(
    person: Person,
    active_on: ActiveOn,
    thresholds: Any,
    previous_posts: int,
    posts: int,
    alerts: bool,
) -> None:
    members = _population(person, 10)
    active_on(members[5], date(2026, 3, 12), shares=35)
    if previous_posts:
        active_on(members[0], PREVIOUS_WEEK, posts=previous_posts)
    active_on(members[0], WEEK, posts=posts)

    result = health(at=NOW)

    assert ("post_density_drop" in _codes(result)) is alerts
    if previous_posts == 0:
        assert result.post_density_change is None
    else:
        assert result.post_density_change == pytest.approx(
            (posts - previous_posts) / previous_posts
        )


def test_post_density_is_per_100_members_who_had_joined_by_the_week_end(
    person: Person, active_on: ActiveOn, thresholds: Any
) -> None:
    members = _population(person, 4)
    # Joined during the last complete week: in its population, not in the previous week's.
    members += [person(joined_at=local(2026, 3, 10), last_interaction_at=NOW) for _ in range(4)]
    # Joined this week: in neither.
    person(joined_at=local(2026, 3, 16), last_interaction_at=NOW)
    active_on(members[0], PREVIOUS_WEEK, posts=4)
    active_on(members[0], WEEK, posts=4)

    result = health(at=NOW)

    assert result.previous_post_density == pytest.approx(100.0)  # 4 posts / 4 members
    assert result.post_density == pytest.approx(50.0)  # 4 posts / 8 members
    assert result.post_density_change == pytest.approx(-0.5)


@pytest.mark.parametrize(
    ("shares", "alerts"),
    [
        pytest.param(35, False, id="exactly 5 a day: no alert"),
        pytest.param(34, True, id="just under 5 a day alerts"),
        pytest.param(0, True, id="no shares alerts"),
    ],
)
def test_shares_per_day_alert_edges(
    person: Person, active_on: ActiveOn, thresholds: Any, shares: int, alerts: bool
) -> None:
    members = _population(person, 4)
    if shares:
        active_on(members[0], date(2026, 3, 14), shares=shares)

    result = health(at=NOW)

    assert result.shares_per_day == pytest.approx(shares / 7)
    assert ("shares_per_day_low" in _codes(result)) is alerts


@pytest.mark.parametrize(
    ("silent", "alerts"),
    [
        pytest.param(5, False, id="exactly half silent: no alert"),
        pytest.param(6, True, id="more than half alerts"),
    ],
)
def test_members_silent_30_days_alert_edges(
    person: Person, active_on: ActiveOn, thresholds: Any, silent: int, alerts: bool
) -> None:
    members = _population(person, 10)
    active_on(members[0], date(2026, 3, 14), shares=35)
    # Last interaction exactly 30 days ago counts as silent for 30 days.
    Member.objects.filter(pk__in=[m.pk for m in members[:silent]]).update(
        last_interaction_at=NOW - timedelta(days=30)
    )

    result = health(at=NOW)

    assert result.silent_30d_count == silent
    assert ("members_silent_30d" in _codes(result)) is alerts


def test_silent_30_days_counts_from_joining_when_never_interacted(
    person: Person, thresholds: Any
) -> None:
    person(joined_at=NOW - timedelta(days=30))  # never interacted, joined 30 days ago: silent
    person(joined_at=NOW - timedelta(days=30) + timedelta(seconds=1))  # one second short
    person(last_interaction_at=NOW - timedelta(days=30) + timedelta(seconds=1))  # not silent

    result = health(at=NOW)

    assert result.silent_30d_count == 1


def test_health_of_an_empty_community_raises_no_alerts(db: Any, thresholds: Any) -> None:
    result = health(at=NOW)

    assert result.alerts == []
    assert (result.post_density, result.previous_post_density) == (0.0, 0.0)
    assert result.post_density_change is None
    assert result.shares_per_day == 0.0
    assert (result.silent_count, result.dormant_count, result.silent_30d_count) == (0, 0, 0)


def test_members_without_activity_count_in_the_density_denominator(
    person: Person, active_on: ActiveOn, thresholds: Any
) -> None:
    members = _population(person, 20)
    active_on(members[0], WEEK, posts=5)

    result = health(at=NOW)

    assert result.post_density == pytest.approx(25.0)
    assert _codes(result) == ["shares_per_day_low"]
