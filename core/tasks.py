"""Periodic housekeeping jobs and webhook delivery. Each periodic job is also a management
command, so the demo needs no broker."""

import uuid
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from core.services import idempotency_records_purge
from core.webhooks import webhook_deliver, webhooks_dispatch
from loyalty.celery import app


@app.task(name="core.idempotency_records_purge", queue="default")
def idempotency_records_purge_task() -> int:
    return idempotency_records_purge(
        at=timezone.now(), retention=timedelta(hours=settings.LOYALTY_IDEMPOTENCY_RETENTION_HOURS)
    )


@app.task(name="core.webhooks_dispatch", queue="default")
def webhooks_dispatch_task() -> dict[str, int]:
    result = webhooks_dispatch(at=timezone.now())
    return {
        "events_dispatched": result.events_dispatched,
        "deliveries_offered": result.deliveries_offered,
        "deliveries_enqueued": result.deliveries_enqueued,
    }


# The HTTP call is bounded by connect/read timeouts; the time limits catch a receiver that
# trickles its answer. Both stay well under LOYALTY_WEBHOOK_ATTEMPT_LEASE_SECONDS, so no second
# attempt starts while this one may still be running.
@app.task(name="core.webhook_deliver", queue="webhooks", soft_time_limit=40, time_limit=60)
def webhook_deliver_task(*, delivery_id: int, lease_token: str | None = None) -> str:
    outcome = webhook_deliver(
        delivery_id=delivery_id,
        lease_token=uuid.UUID(lease_token) if lease_token else None,
        clock=timezone.now,
    )
    return outcome.status
