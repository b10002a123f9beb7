"""Reads of webhook subscriptions, their delivery log and the outbox feed, scoped to the actor,
and of the chunks of background jobs.

A partner sees its own subscriptions (another partner's id answers 404); operators see all.
The outbox feed shows the brand's events to its own systems (partners and operators) alike,
except that a subscription's disabling is its own partner's business.
"""

from collections import defaultdict
from datetime import datetime, timedelta
from uuid import UUID

from django.db.models import Prefetch, Q, QuerySet

from core.actors import Actor
from core.exceptions import NotFoundError
from core.models import (
    Job,
    JobChunk,
    JobStatus,
    OutboxEvent,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
)
from core.webhooks import WEBHOOK_DISABLED_EVENT


def webhook_subscription_list_for_actor(*, actor: Actor) -> QuerySet[WebhookSubscription]:
    """Subscriptions the actor may see: a partner its own, an operator all, a member none."""
    queryset = WebhookSubscription.objects.all()
    if actor.is_partner:
        return queryset.filter(partner_id=actor.partner_id)
    if actor.is_operator:
        return queryset
    return queryset.none()


def webhook_subscription_get_for_actor(
    *, actor: Actor, subscription_id: UUID | str
) -> WebhookSubscription:
    """One subscription the actor may see.

    :raises NotFoundError: when it does not exist or belongs to someone else (never 403).
    """
    try:
        return webhook_subscription_list_for_actor(actor=actor).get(pk=subscription_id)
    except (WebhookSubscription.DoesNotExist, ValueError):
        raise NotFoundError("No webhook subscription with this id.") from None


def webhook_delivery_list(*, subscription: WebhookSubscription) -> QuerySet[WebhookDelivery]:
    """The subscription's deliveries with their event type and attempts (two extra queries,
    whatever the page size)."""
    return (
        WebhookDelivery.objects.filter(subscription=subscription)
        .select_related("event")
        .prefetch_related(
            Prefetch("attempts", queryset=WebhookAttempt.objects.order_by("attempted_at", "id"))
        )
    )


def webhook_delivery_get(*, subscription: WebhookSubscription, delivery_id: int) -> WebhookDelivery:
    """One delivery of the subscription.

    :raises NotFoundError: when the subscription has no such delivery.
    """
    try:
        return webhook_delivery_list(subscription=subscription).get(pk=delivery_id)
    except WebhookDelivery.DoesNotExist:
        raise NotFoundError("No delivery with this id for this webhook.") from None


def outbox_event_feed(*, actor: Actor) -> QuerySet[OutboxEvent]:
    """Events that have a feed position (dispatched), for the brand's own systems; a partner
    does not see other partners' ``webhook.disabled`` events."""
    if actor.is_member:
        return OutboxEvent.objects.none()
    queryset = OutboxEvent.objects.filter(position__isnull=False)
    if actor.is_partner:
        queryset = queryset.exclude(
            Q(event_type=WEBHOOK_DISABLED_EVENT) & ~Q(payload__partner_id=actor.partner_id)
        )
    return queryset


def jobs_unplanned(*, kind: str, lease: timedelta, at: datetime) -> list[UUID]:
    """Jobs of ``kind`` still pending ``lease`` after they were created: their planning task
    never ran (the broker was down when they started, or the message was lost). Watchdogs plan
    them again (planning is idempotent)."""
    return list(
        Job.objects.filter(kind=kind, status=JobStatus.PENDING, created_at__lt=at - lease)
        .order_by("created_at")
        .values_list("pk", flat=True)
    )


def job_chunks_stalled(*, kind: str, lease: timedelta, at: datetime) -> dict[UUID, list[int]]:
    """Open chunks of running jobs of ``kind`` that no worker seems to hold: never started, or
    started longer than ``lease`` ago. Watchdogs dispatch them again (chunks are idempotent)."""
    rows = (
        JobChunk.objects.filter(job__kind=kind, job__status=JobStatus.RUNNING)
        .exclude(status=JobStatus.DONE)
        .filter(
            Q(started_at__lt=at - lease)
            | Q(started_at__isnull=True, job__started_at__lt=at - lease)
        )
        .values_list("job_id", "index")
    )
    stalled: dict[UUID, list[int]] = defaultdict(list)
    for job_id, index in rows:
        stalled[job_id].append(index)
    return dict(stalled)
