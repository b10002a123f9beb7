"""Delete idempotency records past their retention window (also a periodic job)."""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from core.services import idempotency_records_purge


class Command(BaseCommand):
    help = "Delete idempotency records older than LOYALTY_IDEMPOTENCY_RETENTION_HOURS."

    def handle(self, *args: Any, **options: Any) -> None:
        deleted = idempotency_records_purge(
            at=timezone.now(),
            retention=timedelta(hours=settings.LOYALTY_IDEMPOTENCY_RETENTION_HOURS),
        )
        self.stdout.write(f"Deleted {deleted} idempotency records.")
