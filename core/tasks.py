"""Periodic housekeeping jobs. Each is also a management command, so the demo needs no broker."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from core.services import idempotency_records_purge
from loyalty.celery import app


@app.task(name="core.idempotency_records_purge", queue="default")
def idempotency_records_purge_task() -> int:
    return idempotency_records_purge(
        at=timezone.now(), retention=timedelta(hours=settings.LOYALTY_IDEMPOTENCY_RETENTION_HOURS)
    )
