"""Each analytic against hand-computed expectations on a small fixture."""

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest
from django.core.cache import cache

from analytics.selectors import (
    CohortRow,
    WeekMovement,
    WeekPoints,
    analytics_cache_refresh,
    funnel,
    health,
    points_flow_weekly,
    retention,
    tier_distribution,
    tier_movement_weekly,
)
from core.actors import system_actor
from members.models import Member
from rewards.models.ledger import EntryKind, Reason
from rewards.services.jobs import points_expire
from rewards.services.ledger import points_award, points_deduct
from tests.analytics.conftest import NOW, erased, local
from tiers.models import TierChange, TierChangeReason

Person = Callable[..., Member]
ActiveOn = Callable[..., None]


# --- Tier distribution --------------------------------------------------------------------------


def test_tier_distribution_counts_shares_expected_and_gap(person: Person) -> None:
    for _ in range(3):
        person()
    person(tier_id="active")
    person(tier_id="koc")
    erased(person(tier_id="kol"))

    result = tier_distribution(at=NOW)

    assert result.total == 5
    assert result.as_of == NOW
    rows = {row.code: row for row in result.tiers}
    assert [row.code for row in result.tiers] == ["basic", "active", "koc", "kol"]
    assert [row.rank for row in result.tiers] == [0, 1, 2, 3]
    assert [row.count for row in result.tiers] == [3, 1, 1, 0]
    assert rows["basic"].share == pytest.approx(0.6)
    assert rows["basic"].expected_share == pytest.approx(0.45)
    assert rows["basic"].gap == pytest.approx(0.15)
    assert rows["active"].gap == pytest.approx(0.2 - 0.28)
    assert rows["koc"].gap == pytest.approx(0.2 - 0.12)
    assert rows["kol"].share == 0.0
    assert rows["kol"].gap == pytest.approx(-0.05)
    assert rows["kol"].name == "KOL"


def test_tier_distribution_of_an_empty_population_is_zero_shares(db: Any) -> None:
    result = tier_distribution(at=NOW)

    assert result.total == 0
    assert [row.count for row in result.tiers] == [0, 0, 0, 0]
    assert [row.share for row in result.tiers] == [0.0, 0.0, 0.0, 0.0]
    assert [row.gap for row in result.tiers] == pytest.approx([-0.45, -0.28, -0.12, -0.05])


# --- Funnel -------------------------------------------------------------------------------------


def _steps(result: Any) -> dict[str, tuple[int, float, float | None]]:
    return {
        step.key: (step.count, step.share_of_registered, step.step_conversion)
        for step in result.steps
    }


def test_funnel_nested_steps_and_lost_within_72h(person: Person, active_on: ActiveOn) -> None:
    # Registered only, joined at the first instant of the range.
    person(joined_at=local(2026, 2, 1))
    # First interaction, back the next day only: lost within 72 hours; 2 active days.
    b = person(
        joined_at=local(2026, 2, 10),
        first_interaction_at=local(2026, 2, 10, 10),
        last_interaction_at=local(2026, 2, 11, 9),
        last_activity_at=local(2026, 2, 11, 9),
    )
    active_on(b, date(2026, 2, 10), date(2026, 2, 11))
    # Four active days, the last on the 30th day of the window: regular, never purchased.
    c = person(
        joined_at=local(2026, 2, 10),
        first_interaction_at=local(2026, 2, 10, 10),
        last_activity_at=local(2026, 3, 11, 20),
    )
    active_on(c, date(2026, 2, 10), date(2026, 2, 15), date(2026, 2, 20), date(2026, 3, 11))
    # The fourth active day falls on the 31st day: not regular, so not counted as paid either.
    d = person(
        joined_at=local(2026, 2, 15),
        first_interaction_at=local(2026, 2, 15, 8),
        first_purchase_at=local(2026, 2, 16, 8),
        last_activity_at=local(2026, 3, 17, 8),
    )
    active_on(d, date(2026, 2, 15), date(2026, 2, 16), date(2026, 2, 17), date(2026, 3, 17))
    # A login-only day (no interactions) never counts as an active day.
    active_on(d, date(2026, 2, 18), interactions=0, logins=1)
    # Every step, joined at the last minute of the range; a koc.
    e = person(
        joined_at=local(2026, 2, 28, 23, 59, 59),
        first_interaction_at=local(2026, 2, 28, 23, 59, 59),
        first_purchase_at=local(2026, 3, 1, 10),
        last_activity_at=local(2026, 3, 4, 10),
        tier_id="koc",
    )
    active_on(e, *(date(2026, 2, 28) + timedelta(days=offset) for offset in range(5)))
    # Regular and a koc, but never purchased: the nested funnel stops at regular participation.
    i = person(
        joined_at=local(2026, 2, 20),
        first_interaction_at=local(2026, 2, 20, 10),
        last_activity_at=local(2026, 2, 24, 10),
        tier_id="koc",
    )
    active_on(i, *(date(2026, 2, 20) + timedelta(days=offset) for offset in range(4)))
    # Outside the range by one second either way, and an erased member inside it.
    person(joined_at=local(2026, 3, 1), first_interaction_at=local(2026, 3, 1, 1))
    person(joined_at=local(2026, 1, 31, 23, 59, 59), first_interaction_at=local(2026, 2, 1, 1))
    erased(person(joined_at=local(2026, 2, 12), first_interaction_at=local(2026, 2, 12, 1)))

    result = funnel(joined_from=date(2026, 2, 1), joined_to=date(2026, 2, 28), at=NOW)

    assert [step.key for step in result.steps] == [
        "registered",
        "first_interaction",
        "regular_participation",
        "paid_conversion",
        "koc",
    ]
    assert _steps(result) == {
        "registered": (6, 1.0, None),
        "first_interaction": (5, pytest.approx(5 / 6), pytest.approx(5 / 6)),
        "regular_participation": (3, pytest.approx(3 / 6), pytest.approx(3 / 5)),
        "paid_conversion": (1, pytest.approx(1 / 6), pytest.approx(1 / 3)),
        "koc": (1, pytest.approx(1 / 6), 1.0),
    }
    assert result.lost_within_72h == 1
    assert result.lost_within_72h_eligible == 5
    assert result.lost_within_72h_share == pytest.approx(1 / 5)
    assert (result.joined_from, result.joined_to) == (date(2026, 2, 1), date(2026, 2, 28))


def test_funnel_lost_within_72h_edges(person: Person) -> None:
    first = NOW - timedelta(hours=72)
    # First interaction exactly 72 hours ago, nothing since: eligible and lost.
    person(joined_at=local(2026, 3, 10), first_interaction_at=first, last_activity_at=first)
    # One second younger: not eligible yet.
    young = first + timedelta(seconds=1)
    person(joined_at=local(2026, 3, 10), first_interaction_at=young, last_activity_at=young)
    # Last seen exactly at the 72-hour mark: lost; one second later: retained.
    old = NOW - timedelta(hours=100)
    person(
        joined_at=local(2026, 3, 10),
        first_interaction_at=old,
        last_activity_at=old + timedelta(hours=72),
    )
    person(
        joined_at=local(2026, 3, 10),
        first_interaction_at=old,
        last_activity_at=old + timedelta(hours=72, seconds=1),
    )

    result = funnel(joined_from=date(2026, 3, 1), joined_to=date(2026, 3, 18), at=NOW)

    assert result.steps[1].count == 4
    assert result.lost_within_72h_eligible == 3
    assert result.lost_within_72h == 2
    assert result.lost_within_72h_share == pytest.approx(2 / 3)


def test_funnel_regular_participation_threshold_follows_the_setting(
    person: Person, active_on: ActiveOn, settings: Any
) -> None:
    settings.LOYALTY_ANALYTICS_REGULAR_DAYS = 2
    member = person(joined_at=local(2026, 3, 1), first_interaction_at=local(2026, 3, 1, 9))
    active_on(member, date(2026, 3, 1), date(2026, 3, 2))

    result = funnel(joined_from=date(2026, 3, 1), joined_to=date(2026, 3, 1), at=NOW)

    assert result.steps[2].count == 1


def test_funnel_of_an_empty_range_is_all_zero(person: Person) -> None:
    person(joined_at=local(2026, 2, 1), first_interaction_at=local(2026, 2, 1, 9))

    result = funnel(joined_from=date(2025, 1, 1), joined_to=date(2025, 1, 31), at=NOW)

    assert _steps(result) == {
        "registered": (0, 0.0, None),
        "first_interaction": (0, 0.0, 0.0),
        "regular_participation": (0, 0.0, 0.0),
        "paid_conversion": (0, 0.0, 0.0),
        "koc": (0, 0.0, 0.0),
    }
    assert (result.lost_within_72h, result.lost_within_72h_share) == (0, 0.0)


def test_funnel_members_without_activity_stay_at_registered(person: Person) -> None:
    person(joined_at=local(2026, 3, 2))
    person(joined_at=local(2026, 3, 3))

    result = funnel(joined_from=date(2026, 3, 1), joined_to=date(2026, 3, 18), at=NOW)

    assert [step.count for step in result.steps] == [2, 0, 0, 0, 0]
    assert result.lost_within_72h_eligible == 0


# --- Retention ----------------------------------------------------------------------------------


def test_retention_cohorts_by_join_week(person: Person, active_on: ActiveOn) -> None:
    # Cohort of the week of 03-02 (4 members).
    p = person(joined_at=local(2026, 3, 2))
    active_on(p, date(2026, 3, 3), date(2026, 3, 10), date(2026, 3, 17))
    q = person(joined_at=local(2026, 3, 8, 23, 59, 59))
    active_on(q, date(2026, 3, 8), date(2026, 3, 16))
    r = person(joined_at=local(2026, 3, 5))
    active_on(r, date(2026, 3, 12), date(2026, 3, 13), date(2026, 3, 18))
    s = person(joined_at=local(2026, 3, 5))
    active_on(s, date(2026, 3, 11), interactions=0, logins=1)
    erased_member = person(joined_at=local(2026, 3, 4))
    active_on(erased_member, date(2026, 3, 4))
    erased(erased_member)
    # Cohort of the week of 03-09 (2 members).
    t = person(joined_at=local(2026, 3, 9))
    active_on(t, date(2026, 3, 9))
    u = person(joined_at=local(2026, 3, 15, 23, 59, 59))
    active_on(u, date(2026, 3, 16))
    # Cohort of the current week (1 member).
    v = person(joined_at=local(2026, 3, 16))
    active_on(v, date(2026, 3, 18))
    # Joined the week before the first cohort: left out, though active in it.
    w = person(joined_at=local(2026, 3, 1, 23, 59, 59))
    active_on(w, date(2026, 3, 2))

    result = retention(weeks=3, at=NOW)

    assert result.weeks == 3
    assert result.cohorts == [
        CohortRow(week_start=date(2026, 3, 2), size=4, retention=[0.5, 0.5, 0.75]),
        CohortRow(week_start=date(2026, 3, 9), size=2, retention=[0.5, 0.5]),
        CohortRow(week_start=date(2026, 3, 16), size=1, retention=[1.0]),
    ]


def test_retention_without_members_has_empty_cohorts(db: Any) -> None:
    result = retention(weeks=2, at=NOW)

    assert result.cohorts == [
        CohortRow(week_start=date(2026, 3, 9), size=0, retention=[0.0, 0.0]),
        CohortRow(week_start=date(2026, 3, 16), size=0, retention=[0.0]),
    ]


def test_retention_of_members_without_activity_is_zero(person: Person) -> None:
    person(joined_at=local(2026, 3, 10))

    result = retention(weeks=1, at=NOW)

    assert result.cohorts == [CohortRow(week_start=date(2026, 3, 16), size=0, retention=[0.0])]
    assert retention(weeks=2, at=NOW).cohorts[0] == CohortRow(
        week_start=date(2026, 3, 9), size=1, retention=[0.0, 0.0]
    )


# --- Tier movement and points flow --------------------------------------------------------------


def _change(member: Member, from_tier: str | None, to_tier: str, at: Any) -> None:
    TierChange.objects.create(
        member=member,
        from_tier_id=from_tier,
        to_tier_id=to_tier,
        reason=TierChangeReason.PROMOTION,
        actor="tests",
        created_at=at,
    )


def test_tier_movement_weekly_counts_promotions_and_demotions(person: Person) -> None:
    member = person()
    _change(member, "basic", "active", local(2026, 3, 2))  # first instant of the week of 03-02
    _change(member, "active", "koc", local(2026, 3, 8, 23, 59, 59))
    _change(member, "koc", "active", local(2026, 3, 9))
    _change(member, None, "basic", local(2026, 3, 10))  # a first assignment: neither
    _change(member, "active", "active", local(2026, 3, 11))  # same tier: neither
    _change(member, "active", "kol", local(2026, 3, 18, 11))
    _change(member, "basic", "active", local(2026, 3, 1, 23, 59, 59))  # before the window
    _change(member, "basic", "active", NOW + timedelta(seconds=1))  # after now

    result = tier_movement_weekly(weeks=3, at=NOW)

    assert result == [
        WeekMovement(date(2026, 3, 2), promotions=2, demotions=0),
        WeekMovement(date(2026, 3, 9), promotions=0, demotions=1),
        WeekMovement(date(2026, 3, 16), promotions=1, demotions=0),
    ]


def test_points_flow_weekly_sums_issued_redeemed_expired(person: Person) -> None:
    member = person()
    actor = system_actor("tests")
    week1 = local(2026, 3, 3, 10)
    points_award(member=member, points=100, reason=Reason.MANUAL, actor=actor, at=week1)
    points_award(
        member=member,
        points=20,
        reason=Reason.MANUAL,
        actor=actor,
        at=week1,
        expires_at=week1 + timedelta(days=1),
    )
    points_award(
        member=member, points=7, reason=Reason.MANUAL, actor=actor, at=week1, kind=EntryKind.ADJUST
    )
    week2 = local(2026, 3, 10, 10)
    points_expire(at=week2)
    points_deduct(
        member=member,
        points=30,
        reason=Reason.REDEMPTION,
        actor=actor,
        at=week2,
        kind=EntryKind.REDEEM,
    )
    points_award(member=member, points=5, reason=Reason.MANUAL, actor=actor, at=NOW)

    result = points_flow_weekly(weeks=3, at=NOW)

    assert result == [
        WeekPoints(date(2026, 3, 2), issued=120, redeemed=0, expired=0),
        WeekPoints(date(2026, 3, 9), issued=0, redeemed=30, expired=20),
        WeekPoints(date(2026, 3, 16), issued=5, redeemed=0, expired=0),
    ]


def test_weekly_series_without_data_are_zero_weeks(db: Any) -> None:
    assert tier_movement_weekly(weeks=2, at=NOW) == [
        WeekMovement(date(2026, 3, 9), 0, 0),
        WeekMovement(date(2026, 3, 16), 0, 0),
    ]
    assert points_flow_weekly(weeks=1, at=NOW) == [WeekPoints(date(2026, 3, 16), 0, 0, 0)]


def test_retention_caches_only_weeks_closed_to_new_events(
    person: Person, active_on: ActiveOn, settings: Any
) -> None:
    settings.LOYALTY_ANALYTICS_CACHE_SECONDS = 300
    settings.LOYALTY_EVENT_MAX_AGE_DAYS = 30  # weeks before 2026-02-16 are closed
    early = person(joined_at=local(2026, 1, 13))
    late = person(joined_at=local(2026, 1, 14))
    active_on(early, date(2026, 1, 20), date(2026, 2, 10), date(2026, 3, 3))
    first = retention(weeks=10, at=NOW)
    assert first == retention(weeks=10, at=NOW, fresh=True)
    assert first.cohorts[0].retention[:8] == [0.0, 0.5, 0.0, 0.0, 1 / 2, 0.0, 0.0, 1 / 2]
    # A late write into a closed week (impossible through ingestion) and one into an open week.
    active_on(late, date(2026, 2, 11), date(2026, 3, 4))

    later = retention(weeks=10, at=NOW + timedelta(hours=1))

    assert later.cohorts[0].retention[:8] == [0.0, 0.5, 0.0, 0.0, 1 / 2, 0.0, 0.0, 1.0]
    assert retention(weeks=10, at=NOW, fresh=True).cohorts[0].retention[4] == 1.0


def test_the_periodic_refresh_serves_the_default_views_without_queries_and_replaces_them(
    person: Person, active_on: ActiveOn, settings: Any, django_assert_num_queries: Any
) -> None:
    settings.LOYALTY_ANALYTICS_CACHE_SECONDS = 300
    cache.clear()
    member = person(joined_at=local(2026, 3, 2))
    active_on(member, date(2026, 3, 3), posts=1)

    assert analytics_cache_refresh(at=NOW) == 7
    today = date(2026, 3, 18)
    with django_assert_num_queries(0):
        distribution = tier_distribution(at=NOW)
        tier_movement_weekly(weeks=12, at=NOW)
        points_flow_weekly(weeks=12, at=NOW)
        health(at=NOW)
        for weeks in (8, 12):
            assert retention(weeks=weeks, at=NOW).cohorts[-3].size == 1
        joined_from = today - timedelta(days=settings.LOYALTY_ANALYTICS_FUNNEL_DEFAULT_DAYS - 1)
        assert funnel(joined_from=joined_from, joined_to=today, at=NOW).steps[0].count == 1
    assert distribution.total == 1

    person(joined_at=local(2026, 3, 10))
    analytics_cache_refresh(at=NOW + timedelta(minutes=5))
    with django_assert_num_queries(0):
        assert tier_distribution(at=NOW + timedelta(minutes=5)).total == 2


def test_the_refresh_does_nothing_with_the_cache_off(db: Any) -> None:
    assert analytics_cache_refresh(at=NOW) == 0
