"""Dispatch outbox events to webhook subscriptions and attempt due deliveries, once."""

from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from core.webhooks import webhooks_dispatch


class Command(BaseCommand):
    help = (
        "Fan new outbox events out to webhook subscriptions and enqueue due deliveries (they "
        "run inline when no broker is configured). Beat runs this every minute."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        result = webhooks_dispatch(at=timezone.now())
        self.stdout.write(
            f"Dispatched {result.events_dispatched} events, offered "
            f"{result.deliveries_offered} deliveries, enqueued {result.deliveries_enqueued}."
        )
