"""Periodic member jobs."""

from django.utils import timezone

from loyalty.celery import app
from members.services import tags_purge_expired


@app.task(name="members.tags_purge_expired", queue="default")
def tags_purge_expired_task() -> int:
    return tags_purge_expired(at=timezone.now())
