"""Analytics jobs. Each is also a management command, so the demo runs without a broker."""

from django.utils import timezone

from analytics.selectors import analytics_cache_refresh
from analytics.services import health_alerts_publish
from loyalty.celery import app


@app.task(name="analytics.health_alerts_publish", queue="bulk")
def health_alerts_publish_task() -> int:
    return len(health_alerts_publish(at=timezone.now()))


@app.task(name="analytics.cache_refresh", queue="bulk")
def analytics_cache_refresh_task() -> int:
    return analytics_cache_refresh(at=timezone.now())
