"""Move members between lifecycle stages and fire the scenario triggers (the daily job)."""

from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone
from tqdm import tqdm

from members.lifecycle import lifecycle_advance


class Command(BaseCommand):
    help = (
        "Move every member whose lifecycle stage is out of date (silent, dormant, churned, back "
        "to active), then fire the scenario triggers due today. Safe to re-run."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        with tqdm(desc="members", unit="member", file=self.stderr) as bar:
            result = lifecycle_advance(at=timezone.now(), progress=bar.update)
        self.stdout.write(
            f"{result.changed} lifecycle changes, {result.scenarios_triggered} scenarios triggered."
        )
