"""Analytics fixtures: a fixed "now", members with chosen activity times, rollup rows."""

from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from core.actors import system_actor
from members.models import Member, MemberDailyActivity
from members.services import member_create, member_erase

CST = ZoneInfo("Asia/Shanghai")
# A Wednesday: the current week began Monday 2026-03-16, the last complete week is 03-09..03-15.
NOW = datetime(2026, 3, 18, 12, 0, tzinfo=CST)


def local(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=CST)


@pytest.fixture(autouse=True)
def _no_analytics_cache(settings: Any) -> None:
    """Selectors read fresh data in tests (the caching test turns it back on)."""
    settings.LOYALTY_ANALYTICS_CACHE_SECONDS = 0


@pytest.fixture
def person(db: Any) -> Callable[..., Member]:
    """A member who joined at ``joined_at`` with the given activity times and tier."""
    counter = iter(range(1, 1_000_000))

    def make(joined_at: datetime | None = None, **fields: Any) -> Member:
        member = member_create(
            external_id=f"a-{next(counter):05d}",
            display_name="Member",
            actor=system_actor("tests"),
            at=joined_at or local(2026, 1, 1),
        )
        if fields:
            Member.objects.filter(pk=member.pk).update(**fields)
            member.refresh_from_db()
        return member

    return make


@pytest.fixture
def active_on() -> Callable[..., None]:
    """Rollup rows: the member interacted (or only did ``interactions=0`` things) on these days."""

    def add(member: Member, *days: date, interactions: int = 1, **counts: Any) -> None:
        MemberDailyActivity.objects.bulk_create(
            MemberDailyActivity(
                member=member, business_date=day, interactions=interactions, **counts
            )
            for day in days
        )

    return add


@pytest.fixture
def now() -> datetime:
    return NOW


def erased(member: Member) -> Member:
    return member_erase(member=member, actor=system_actor("tests"), at=timezone.now())
