"""Analytics writes: the daily community health alerts, recorded and announced once per day."""

from datetime import datetime

from django.db import IntegrityError, transaction

from analytics.models import CommunityAlert
from analytics.selectors import health
from core.events import DomainEvent, domain_events_record

COMMUNITY_ALERT_EVENT = "community.alert"
COMMUNITY_AGGREGATE_ID = "community"


def health_alerts_publish(*, at: datetime) -> list[CommunityAlert]:
    """Record the health alerts raised on ``at``'s business day and announce each new one as a
    ``community.alert`` outbox event. Idempotent: a re-run the same day records and emits nothing
    new (unique (code, business date) on the alert, the same pair as the event's dedupe key).
    Returns the alerts recorded by this run."""
    result = health(at=at, fresh=True)
    day = result.business_date
    if not result.alerts or day is None:
        return []
    with transaction.atomic():
        created = []
        # At most one row per alert code (three codes): each insert in its own savepoint, so a
        # code already recorded today (an earlier run, or a concurrent one that committed first:
        # PostgreSQL makes this insert wait for it) is skipped, and the rows this run wrote are
        # known exactly.
        for alert in sorted(result.alerts, key=lambda alert: alert.code):
            try:
                with transaction.atomic():
                    created.append(
                        CommunityAlert.objects.create(
                            code=alert.code,
                            business_date=day,
                            value=alert.value,
                            threshold=alert.threshold,
                            message=alert.message,
                            created_at=at,
                        )
                    )
            except IntegrityError:
                continue
        domain_events_record(
            events=[
                DomainEvent(
                    COMMUNITY_ALERT_EVENT,
                    COMMUNITY_AGGREGATE_ID,
                    {
                        "code": alert.code,
                        "business_date": day.isoformat(),
                        "week_start": result.week_start.isoformat(),
                        "value": alert.value,
                        "threshold": alert.threshold,
                        "message": alert.message,
                    },
                    at,
                    dedupe_key=f"{alert.code}:{day.isoformat()}",
                )
                for alert in created
            ],
            at=at,
        )
    return created
