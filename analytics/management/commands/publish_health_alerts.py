"""Record and announce today's community health alerts (the daily job, by hand)."""

from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from analytics.services import health_alerts_publish


class Command(BaseCommand):
    help = "Record today's community health alerts and emit community.alert events (once a day)."

    def handle(self, *args: Any, **options: Any) -> None:
        alerts = health_alerts_publish(at=timezone.now())
        for alert in alerts:
            self.stdout.write(f"{alert.code}: {alert.message}")
        self.stdout.write(f"{len(alerts)} new alerts.")
