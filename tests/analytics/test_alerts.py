"""Publishing the health alerts: CommunityAlert rows and community.alert outbox events, once per
alert code and business day."""

from collections.abc import Callable
from datetime import date, timedelta
from io import StringIO
from typing import Any

import time_machine
from django.core.management import call_command

from analytics.models import CommunityAlert
from analytics.services import health_alerts_publish
from analytics.tasks import health_alerts_publish_task
from core.models import OutboxEvent
from core.schedules import SCHEDULES
from core.webhooks import EVENT_TYPES
from members.models import Member
from tests.analytics.conftest import NOW

Person = Callable[..., Member]
ActiveOn = Callable[..., None]


def _quiet_week(person: Person, active_on: ActiveOn) -> Member:
    """One member, posts down 50% week over week, no shares: two alerts."""
    member = person(last_interaction_at=NOW - timedelta(days=1))
    active_on(member, date(2026, 3, 2), posts=2)
    active_on(member, date(2026, 3, 9), posts=1)
    return member


def _events() -> list[tuple[str, str, str]]:
    return sorted(
        (event.payload["code"], event.payload["business_date"], event.dedupe_key)
        for event in OutboxEvent.objects.filter(event_type="community.alert")
    )


def test_publish_records_alerts_and_outbox_events(person: Person, active_on: ActiveOn) -> None:
    _quiet_week(person, active_on)

    created = health_alerts_publish(at=NOW)

    assert [alert.code for alert in created] == ["post_density_drop", "shares_per_day_low"]
    rows = {alert.code: alert for alert in CommunityAlert.objects.all()}
    assert set(rows) == {"post_density_drop", "shares_per_day_low"}
    assert rows["post_density_drop"].business_date == date(2026, 3, 18)
    assert rows["post_density_drop"].value == 0.5
    assert rows["post_density_drop"].threshold == 0.2
    assert rows["shares_per_day_low"].threshold == 5.0
    assert _events() == [
        ("post_density_drop", "2026-03-18", "post_density_drop:2026-03-18"),
        ("shares_per_day_low", "2026-03-18", "shares_per_day_low:2026-03-18"),
    ]
    event = OutboxEvent.objects.get(dedupe_key="post_density_drop:2026-03-18")
    assert event.aggregate_id == "community"
    assert event.payload == {
        "code": "post_density_drop",
        "business_date": "2026-03-18",
        "week_start": "2026-03-09",
        "value": 0.5,
        "threshold": 0.2,
        "message": rows["post_density_drop"].message,
    }
    assert event.occurred_at == NOW


def test_rerun_the_same_day_emits_nothing_new(person: Person, active_on: ActiveOn) -> None:
    _quiet_week(person, active_on)
    health_alerts_publish(at=NOW)

    again = health_alerts_publish(at=NOW + timedelta(hours=3))

    assert again == []
    assert CommunityAlert.objects.count() == 2
    assert OutboxEvent.objects.filter(event_type="community.alert").count() == 2


def test_a_new_alert_later_the_same_day_is_the_only_one_emitted(
    person: Person, active_on: ActiveOn, settings: Any
) -> None:
    _quiet_week(person, active_on)
    health_alerts_publish(at=NOW)
    settings.LOYALTY_HEALTH_MAX_SILENT_SHARE = 0.0
    Member.objects.update(last_interaction_at=NOW - timedelta(days=40))

    again = health_alerts_publish(at=NOW + timedelta(hours=1))

    assert [alert.code for alert in again] == ["members_silent_30d"]
    assert [code for code, _, _ in _events()] == [
        "members_silent_30d",
        "post_density_drop",
        "shares_per_day_low",
    ]


def test_the_next_day_alerts_again(person: Person, active_on: ActiveOn) -> None:
    _quiet_week(person, active_on)
    health_alerts_publish(at=NOW)

    next_day = health_alerts_publish(at=NOW + timedelta(days=1))

    assert [alert.business_date for alert in next_day] == [date(2026, 3, 19)] * 2
    assert OutboxEvent.objects.filter(event_type="community.alert").count() == 4


def test_a_healthy_community_publishes_nothing(
    person: Person, active_on: ActiveOn, settings: Any
) -> None:
    settings.LOYALTY_HEALTH_MIN_SHARES_PER_DAY = 0
    member = person(last_interaction_at=NOW - timedelta(days=1))
    active_on(member, date(2026, 3, 2), posts=2)
    active_on(member, date(2026, 3, 9), posts=2)

    assert health_alerts_publish(at=NOW) == []
    assert CommunityAlert.objects.count() == 0
    assert OutboxEvent.objects.count() == 0


def test_task_and_command_publish_once(person: Person, active_on: ActiveOn) -> None:
    _quiet_week(person, active_on)
    out = StringIO()

    with time_machine.travel(NOW, tick=False):
        first = health_alerts_publish_task.delay().get()
        call_command("publish_health_alerts", stdout=out)

    assert first == 2
    assert out.getvalue().strip().endswith("0 new alerts.")
    assert OutboxEvent.objects.filter(event_type="community.alert").count() == 2


def test_the_daily_schedule_and_the_event_type_are_declared() -> None:
    from loyalty.celery import app

    assert "analytics.health_alerts_publish" in {schedule.task for schedule in SCHEDULES}
    assert "analytics.health_alerts_publish" in app.tasks
    assert "community.alert" in EVENT_TYPES
