"""Periodic member jobs."""

from django.utils import timezone

from loyalty.celery import app
from members.lifecycle import lifecycle_advance
from members.services import tags_purge_expired


@app.task(name="members.tags_purge_expired", queue="default")
def tags_purge_expired_task() -> int:
    return tags_purge_expired(at=timezone.now())


@app.task(name="members.lifecycle_advance", queue="bulk")
def lifecycle_advance_task() -> int:
    """The daily lifecycle job (stages, then scenario triggers). Returns the stage changes."""
    return lifecycle_advance(at=timezone.now()).changed
